"""The report endpoint: platforms' delivery reports, answered only once the broker has confirmed them.

``GET|POST /v1/reports/<site>/<secret>/<platform>?ref=<message id>.<attempt>``: the site names a
configured site whose `report_secret` is the secret and whose platform is the one named; anything else is
refused (403) and counted as forged. Each platform's own fields are read into one `DeliveryReport`; the
report goes to <prefix>.reports with a publisher confirm, and only then is the platform answered (Jasmin
with the ``ACK/Jasmin`` it waits for), so a crash before the store has it loses nothing: an unanswered
platform sends it again, and the store keeps a report sent twice once. When the broker does not confirm
in time the report is fsynced in the ingress's spool instead and answered all the same (Kannel does not
send a dlr-url again); the spool's forwarder publishes it once the broker is back.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from ingress.metrics import REPORT_REQUESTS
from ingress.service import Ingress
from ingress.spool import SpoolEntry
from ingress.submission import Reply
from shared.broker import Fate
from shared.envelope import encode_reports
from shared.logs import get_logger
from shared.model import DeliveryReport, ReportState
from shared.reports import (
    RECEIPT_STATES,
    REF_PARAMETER,
    REPORTS_PATH,
    SPOOLED_REPORT_KEY,
    parse_reference,
)
from shared.settings import PlatformKind

log = get_logger("ingress.reports")

CONFIRM_WAIT_S = 10.0
MAX_REPORT_BYTES = 16_384
JASMIN_ACK = b"ACK/Jasmin"
TEXT = "text/plain; charset=utf-8"
_PREFIX = REPORTS_PATH + "/"

# Kannel's DLR types (%d): 1 delivered to the phone, 2 not delivered to the phone, 4 queued at the SMSC,
# 8 delivered to the SMSC, 16 not delivered to the SMSC.
KANNEL_TYPES = {
    "1": ReportState.DELIVERED,
    "2": ReportState.UNDELIVERED,
    "4": ReportState.PENDING,
    "8": ReportState.SENT,
    "16": ReportState.UNDELIVERED,
}
KANNEL_DLR_MASK = 1 | 2 | 8 | 16
# What the relay asks Kannel to add to its dlr-url: type, SMSC's answer, time, Kannel's SMSC and its id.
KANNEL_DLR_FIELDS = "&type=%d&reply=%A&ts=%T&smsc=%i&platform_id=%F"
HTTP_JSON_STATES = {
    "DELIVERED": ReportState.DELIVERED,
    "UNDELIVERED": ReportState.UNDELIVERED,
    "FAILED": ReportState.UNDELIVERED,
    "EXPIRED": ReportState.UNDELIVERED,
    "SENT": ReportState.SENT,
    "ACCEPTED": ReportState.SENT,
}


class Malformed(ValueError):
    """Not a report of the platform named."""


def _ref(fields: dict[str, str]) -> tuple[str, int]:
    """The relay message and attempt, or ("", 0) for a report naming none (kept as unmatched)."""
    return parse_reference(fields.get(REF_PARAMETER)) or ("", 0)


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def kannel_report(site: str, query: str, _: bytes) -> DeliveryReport:
    fields = dict(parse_qsl(query, keep_blank_values=True))
    state = KANNEL_TYPES.get(fields.get("type", ""))
    if state is None:
        raise Malformed(f"Kannel DLR type {fields.get('type')!r}")
    message_id, attempt = _ref(fields)
    reply = fields.get("reply", "")
    err = reply.partition("err:")[2][:3] if "err:" in reply else ""
    return DeliveryReport(
        site=site,
        platform=PlatformKind.KANNEL.value,
        message_id=message_id,
        attempt=attempt,
        state=state,
        platform_status=fields["type"],
        error_code=err,
        platform_id=fields.get("platform_id", ""),
        at=_epoch(fields.get("ts")),
        raw=query,
    )


def jasmin_report(site: str, query: str, body: bytes) -> DeliveryReport:
    fields = dict(parse_qsl(query, keep_blank_values=True))
    form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    status = form.get("message_status", "")
    level = form.get("level", "")
    if not status or level not in ("1", "2", "3"):
        raise Malformed(f"Jasmin DLR without message_status or level ({sorted(form)})")
    if level == "1":  # the SMSC's answer to Jasmin's submit_sm
        state = ReportState.SENT if status == "ESME_ROK" else ReportState.UNDELIVERED
    else:
        state = RECEIPT_STATES.get(status.upper(), ReportState.PENDING)
    message_id, attempt = _ref(fields)
    return DeliveryReport(
        site=site,
        platform=PlatformKind.JASMIN.value,
        message_id=message_id,
        attempt=attempt,
        state=state,
        platform_status=status,
        error_code=form.get("err", ""),
        platform_id=form.get("id", ""),
        raw=f"{query}\n{body.decode('utf-8', 'replace')}",
    )


def http_json_report(site: str, query: str, body: bytes) -> DeliveryReport:
    fields = dict(parse_qsl(query, keep_blank_values=True))
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Malformed("body is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        raise Malformed('a report is a JSON object with a "status"')
    status = data["status"]
    message_id, attempt = _ref(fields)
    error = data.get("error")
    return DeliveryReport(
        site=site,
        platform=PlatformKind.HTTP_JSON.value,
        message_id=message_id,
        attempt=attempt,
        state=HTTP_JSON_STATES.get(status.upper(), ReportState.PENDING),
        platform_status=status,
        error_code="" if error is None else str(error),
        platform_id=str(data.get("id", "")),
        at=_epoch(str(data["at"])) if data.get("at") is not None else None,
        raw=f"{query}\n{body.decode('utf-8', 'replace')}",
    )


PARSERS: dict[str, Callable[[str, str, bytes], DeliveryReport]] = {
    PlatformKind.KANNEL.value: kannel_report,
    PlatformKind.JASMIN.value: jasmin_report,
    PlatformKind.HTTP_JSON.value: http_json_report,
}


def _authentic(runtime: Ingress, site: str, secret: str, platform: str) -> bool:
    config = runtime.settings.sites.get(site)
    if config is None or config.report_secret is None or config.platform.value != platform:
        return False
    return hmac.compare_digest(config.report_secret.encode(), secret.encode())


def _answer(platform: str, status: int, text: str) -> Reply:
    if platform == PlatformKind.JASMIN.value and status == 200:
        return Reply(status=200, body=JASMIN_ACK, media_type=TEXT)
    if platform == PlatformKind.HTTP_JSON.value:
        return Reply(status=status, body=orjson.dumps({"status": text}))
    return Reply(status=status, body=text.encode(), media_type=TEXT)


# The answer and the counter of every report queued, made once: a frozen reply nobody changes, and the
# counter's child, whose look-up by labels cost as much as the rest of the answer.
_OK = {platform: _answer(platform, 200, "ok") for platform in PARSERS}
_QUEUED = {platform: REPORT_REQUESTS.labels(platform, "queued") for platform in PARSERS}


def report_route(path: str) -> tuple[str, str, str] | None:
    """(site, secret, platform) of a report URL's path, or None when it is not one."""
    if not path.startswith(_PREFIX):
        return None
    parts = path[len(_PREFIX) :].split("/")
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


async def take_report(
    runtime: Ingress, route: tuple[str, str, str], query: str, body: AsyncIterator[bytes]
) -> Reply:
    """A platform's report request, answered once the report is durable (or refused)."""
    site, secret, platform = route
    label = platform if platform in PARSERS else "other"
    if platform not in PARSERS or not _authentic(runtime, site, secret, platform):
        REPORT_REQUESTS.labels(label, "forged").inc()
        log.warning("report refused: unknown site, wrong secret or platform", site=site[:64], platform=label)
        return _answer(platform, 403, "forbidden")
    content = b""
    async for chunk in body:
        content += chunk
        if len(content) > MAX_REPORT_BYTES:
            break  # the rest is drained, up to a limit, before the answer (see `ingress.request_body`)
    try:
        if len(content) > MAX_REPORT_BYTES:
            raise Malformed(f"a report of more than {MAX_REPORT_BYTES} bytes")
        parsed = PARSERS[platform](site, query, content)
    except Malformed as exc:
        REPORT_REQUESTS.labels(label, "malformed").inc()
        log.warning("report refused: malformed", site=site, platform=label, error=str(exc))
        return _answer(platform, 400, str(exc))
    return await _publish(runtime, parsed, label)


router = APIRouter()


_DOCUMENTED: dict[str, Any] = {
    "summary": "A platform's delivery report (Kannel dlr-url, Jasmin dlr-url, http-json callback)",
    "description": "Answered 200 once the report is durable (a confirmed publish, or else fsynced in the "
    "ingress's spool); 403 for an unknown "
    "site, a wrong secret or platform; 400 for what is not a report; 503 when the broker did not confirm "
    "and the report could not be spooled either.",
}


@router.get(REPORTS_PATH + "/{site}/{secret}/{platform}", operation_id="report_get", **_DOCUMENTED)
@router.post(REPORTS_PATH + "/{site}/{secret}/{platform}", operation_id="report_post", **_DOCUMENTED)
async def report(site: str, secret: str, platform: str, request: Request) -> Response:
    """The same as `ingress.fast_path` serves without FastAPI; here for the OpenAPI document and for
    anyone mounting the bare app."""
    reply = await take_report(
        request.app.state.ingress, (site, secret, platform), request.url.query, request.stream()
    )
    return Response(reply.body, status_code=reply.status, media_type=reply.media_type)


async def _publish(runtime: Ingress, parsed: DeliveryReport, label: str) -> Reply:
    started = time.perf_counter()
    verdict = await runtime.reports.add(parsed, wait_s=CONFIRM_WAIT_S)
    if not verdict.confirmed:
        if await _spool(runtime, parsed, maybe_sent=verdict.fate is Fate.UNKNOWN):
            REPORT_REQUESTS.labels(label, "spooled").inc()
            return _answer(label, 200, "ok")
        REPORT_REQUESTS.labels(label, "unavailable").inc()
        log.warning("report not durable; the platform must send it again", site=parsed.site)
        return _answer(label, 503, "try again later")
    _QUEUED[label].inc()
    log.debug(
        "report queued",
        site=parsed.site,
        message_id=parsed.message_id,
        attempt=parsed.attempt,
        state=parsed.state.value,
        ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return _OK[label]


async def _spool(runtime: Ingress, parsed: DeliveryReport, *, maybe_sent: bool) -> bool:
    """The report fsynced in the ingress's spool, to be forwarded once the broker confirms again: a
    platform that does not send a report again (Kannel's dlr-url) would lose it to a 503. One whose
    publish may yet be confirmed can reach the store twice; the store keeps it once."""
    if runtime.spool is None:
        return False
    entry = SpoolEntry(
        message_id=f"report-{uuid.uuid4().hex}",
        routing_key=SPOOLED_REPORT_KEY,
        headers={},
        body=encode_reports([parsed]),
        maybe_sent=maybe_sent,
    )
    try:
        await runtime.spool.append([entry])
    except Exception as exc:
        log.error("report could not be spooled", site=parsed.site, error=repr(exc))
        return False
    return True
