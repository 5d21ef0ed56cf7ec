"""Adapter of Kannel's smsbox `sendsms` HTTP interface: one message per request."""

from __future__ import annotations

import math
import time
from urllib.parse import urlencode

from shared.http1 import HttpAnswer
from shared.model import Job, Outcome
from shared.reports import ReportUrls
from workers.platforms.base import Result
from workers.platforms.http_client import HttpRequester, short
from workers.platforms.per_message import PerMessagePlatform

# Kannel's own answers to a sendsms request that it took.
_TAKEN_PREFIXES = ("0:", "3:")  # "0: Accepted for delivery", "3: Queued for later delivery"
# Reports asked of Kannel: delivered (1) and not delivered (2) to the phone, delivered (8) and not
# delivered (16) to the SMSC; "queued at the SMSC" (4) says nothing the relay acts on.
DLR_MASK = 1 | 2 | 8 | 16
# Kannel's escapes added to the dlr-url: the report's type, the SMSC's answer, its time, the SMSC's id.
DLR_FIELDS = "&type=%d&reply=%A&ts=%T&smsc=%i&platform_id=%F"
CODING_7BIT = 0
CODING_UCS2 = 2


class KannelPlatform(PerMessagePlatform):
    """Sends each job as one sendsms GET; text goes as UTF-8 and Kannel re-encodes it (UCS-2 if needed)."""

    def __init__(
        self,
        *,
        url: str,
        username: str,
        password: str,
        timeout_s: float,
        concurrency: int = 64,
        client: HttpRequester | None = None,
        reports: ReportUrls | None = None,
    ) -> None:
        super().__init__(
            url=url,
            username=username,
            password=password,
            timeout_s=timeout_s,
            concurrency=concurrency,
            client=client,
            reports=reports,
        )

    def params(self, job: Job, *, attempt: int = 0, now: float | None = None) -> dict[str, str]:
        params = {
            "username": self._username,
            "password": self._password,
            "to": job.to,
            "from": job.sender,
            "text": job.body,
            "charset": "UTF-8",
            "coding": str(CODING_7BIT if job.encoding == "gsm7" else CODING_UCS2),
            # Kannel's field for a caller's own transaction id: it writes it into its access log
            # ([BINF:...]) and hands it to the SMSC module, so each copy there names the relay message.
            "binfo": job.id,
        }
        if self._reports is not None:
            # The relay's id and attempt in the URL: Kannel's own %I differs between two reports of one
            # message (measured with fakesmsc), so it cannot match them.
            params["dlr-mask"] = str(DLR_MASK)
            params["dlr-url"] = self._reports.for_attempt(job.id, attempt) + DLR_FIELDS
        if job.expires_at > 0:
            # Kannel's validity is relative, in whole minutes; round up so the platform never gives up
            # before the relay would.
            remaining_s = job.expires_at - (now if now is not None else time.time())
            params["validity"] = str(max(1, math.ceil(remaining_s / 60)))
        return params

    async def _request(self, job: Job, attempt: int) -> HttpAnswer:
        separator = "&" if "?" in self._target else "?"
        query = urlencode(self.params(job, attempt=attempt))
        return await self._http.request("GET", self._target + separator + query)

    def _classify(self, answer: HttpAnswer) -> Result:
        return classify_answer(answer.status, answer.body)


def classify_answer(status: int, body: bytes) -> Result:
    """Kannel 1.4.5's sendsms answers, as measured against it (README, "Platforms")."""
    text = short(body)
    detail = short(f"HTTP {status}: {text}")
    if 200 <= status < 300:
        # "Sent." is the answer with immediate-sendsms-reply = true: taken, like "0:" and "3:".
        if text.startswith(_TAKEN_PREFIXES) or text == "Sent.":
            return Result(outcome=Outcome.ACCEPTED, detail=text)
        # A 2xx whose words we do not know: Kannel may have queued it.
        return Result(outcome=Outcome.AMBIGUOUS, detail=detail)
    if status == 403 and text.startswith("Authorization failed"):
        # A wrong username or password is the site's configuration, not the message: fail over.
        return Result(outcome=Outcome.UNAVAILABLE, detail=detail, problem="authentication failed")
    if status == 404:
        return Result(outcome=Outcome.UNAVAILABLE, detail=detail, problem=f"wrong sendsms URL ({text})")
    if status in (500, 503):
        # "500 Sending failed." and "503 Temporal failure": smsbox could not queue it; nothing was taken.
        return Result(outcome=Outcome.UNAVAILABLE, detail=detail)
    if 400 <= status < 500:
        # "403 Not routable. Do not try again.", denied numbers, missing or invalid fields: this message.
        return Result(outcome=Outcome.REJECTED, detail=detail)
    # Any other 5xx: Kannel may have queued the message before failing.
    return Result(outcome=Outcome.AMBIGUOUS, detail=detail)
