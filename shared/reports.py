"""Delivery reports: the URL a site's platform reports to, the reference naming a relay message and
its attempt, and SMPP receipt texts.

A platform reports to ``<ingress.public_url>/v1/reports/<site>/<secret>/<platform>?ref=<id>.<attempt>``
(Kannel and Jasmin with their own fields added): the message and the attempt come back from what the relay
gave the platform with that attempt, never from the order reports arrive in, and the per-site secret
(`sites.<name>.report_secret`) keeps out anybody but the site's platform.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from shared.model import ReportState
from shared.settings import Settings

REPORTS_PATH = "/v1/reports"
# The routing key of a report in the ingress's spool (a submit's is its site, which cannot start so): the
# forwarder publishes it to the reports exchange.
SPOOLED_REPORT_KEY = "@reports"
REF_PARAMETER = "ref"
_REFERENCE = re.compile(r"^([0-9a-f]{32})\.([0-9]{1,6})$")


def reference(message_id: str, attempt: int) -> str:
    return f"{message_id}.{attempt}"


def parse_reference(text: str | None) -> tuple[str, int] | None:
    """(message id, attempt) from a reference; None when it names no relay message."""
    found = _REFERENCE.match(text or "")
    return (found[1], int(found[2])) if found else None


def public_url(settings: Settings) -> str:
    if settings.ingress.public_url:
        return settings.ingress.public_url.rstrip("/")
    return f"http://{settings.ingress.host}:{settings.ingress.port}"


@dataclass(frozen=True, slots=True)
class ReportUrls:
    """Where one site's platform sends its reports."""

    base: str  # ending in /<platform>

    def for_attempt(self, message_id: str, attempt: int) -> str:
        return f"{self.base}?{REF_PARAMETER}={reference(message_id, attempt)}"


def report_urls(settings: Settings, site: str) -> ReportUrls | None:
    """The site's report URLs, or None when the site asks for no reports (no `report_secret`)."""
    config = settings.sites[site]
    if config.report_secret is None:
        return None
    return ReportUrls(
        f"{public_url(settings)}{REPORTS_PATH}/{site}/{config.report_secret}/{config.platform.value}"
    )


# SMPP 3.4 Appendix B: the receipt text of a deliver_sm with the receipt bit of esm_class set.
ESM_RECEIPT = 0x04
TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MESSAGE_STATE = 0x0427
_RECEIPT_FIELD = re.compile(r"(id|sub|dlvrd|submit date|done date|stat|err):(\S*)", re.IGNORECASE)
# The final states of SMPP's stat field as the relay reads them; ENROUTE, ACCEPTD, UNKNOWN are not final.
RECEIPT_STATES = {
    "DELIVRD": ReportState.DELIVERED,
    "UNDELIV": ReportState.UNDELIVERED,
    "EXPIRED": ReportState.UNDELIVERED,
    "REJECTD": ReportState.UNDELIVERED,
    "DELETED": ReportState.UNDELIVERED,
}


@dataclass(frozen=True, slots=True)
class Receipt:
    platform_id: str
    stat: str
    err: str
    done_at: float | None

    @property
    def state(self) -> ReportState:
        return RECEIPT_STATES.get(self.stat.upper(), ReportState.PENDING)


def receipt_text(*, platform_id: str, stat: str, err: str = "000", at: datetime | None = None) -> str:
    when = (at or datetime.now(UTC)).strftime("%y%m%d%H%M")
    done = 1 if stat == "DELIVRD" else 0
    return (
        f"id:{platform_id} sub:001 dlvrd:{done:03d} submit date:{when} done date:{when} "
        f"stat:{stat} err:{err} text:"
    )


def parse_receipt(text: str) -> Receipt | None:
    """The fields of a receipt text; None when it has no id or stat (not a receipt)."""
    fields = {name.lower(): value for name, value in _RECEIPT_FIELD.findall(text)}
    if not fields.get("id") or not fields.get("stat"):
        return None
    done_at = None
    done = fields.get("done date", "")
    for layout in ("%y%m%d%H%M%S", "%y%m%d%H%M"):
        try:
            done_at = datetime.strptime(done, layout).replace(tzinfo=UTC).timestamp()
            break
        except ValueError:
            continue
    return Receipt(platform_id=fields["id"], stat=fields["stat"], err=fields.get("err", ""), done_at=done_at)
