"""Adapter of Jasmin's HTTP API `/send`: one message per request, form-encoded POST."""

from __future__ import annotations

from urllib.parse import urlencode

from shared.http1 import HttpAnswer
from shared.model import Job, Outcome
from workers.platforms.base import Result
from workers.platforms.http_client import short
from workers.platforms.per_message import PerMessagePlatform

CODING_DEFAULT = 0  # SMSC default alphabet
CODING_UCS2 = 8
_FORM = [("Content-Type", "application/x-www-form-urlencoded")]


class JasminPlatform(PerMessagePlatform):
    """Sends each job as one POST to Jasmin's `/send`; non-GSM text goes as UTF-16BE hex with coding 8."""

    def form(self, job: Job, *, attempt: int = 0) -> dict[str, str]:
        form = {"username": self._username, "password": self._password, "to": job.to, "from": job.sender}
        if job.encoding == "gsm7":
            form.update(content=job.body, coding=str(CODING_DEFAULT))
        else:
            # Jasmin's `content` is latin-1; anything else must go as raw UCS-2 bytes in hex.
            form.update({"hex-content": job.body.encode("utf-16-be").hex(), "coding": str(CODING_UCS2)})
        if self._reports is not None:
            # Level 3: the SMSC's answer to Jasmin's submit (1) and the handset's receipt (2); POSTed, so
            # the relay's reference stays in the URL's query as written.
            form.update(
                {
                    "dlr": "yes",
                    "dlr-url": self._reports.for_attempt(job.id, attempt),
                    "dlr-level": "3",
                    "dlr-method": "POST",
                }
            )
        # No validity-period: Jasmin 0.11.1 answers `Success` to one and then drops the message whenever
        # the time it makes of it falls in a second's last tenth (it cannot encode it; README, "Platforms").
        return form

    async def _request(self, job: Job, attempt: int) -> HttpAnswer:
        body = urlencode(self.form(job, attempt=attempt)).encode()
        return await self._http.request("POST", self._target, headers=_FORM, body=body)

    def _classify(self, answer: HttpAnswer) -> Result:
        return classify_answer(answer.status, answer.body)


def classify_answer(status: int, body: bytes) -> Result:
    """Jasmin 0.11's `/send` answers, as measured against it (README, "Platforms")."""
    text = short(body)
    detail = short(f"HTTP {status}: {text}")
    if status == 200 and text.startswith("Success"):
        return Result(outcome=Outcome.ACCEPTED, detail=text)
    if status == 403:
        if "Authentication failure" in text:
            return Result(outcome=Outcome.UNAVAILABLE, detail=detail, problem="authentication failed")
        if "Cannot charge" in text:  # no balance left: the site cannot take traffic
            return Result(outcome=Outcome.UNAVAILABLE, detail=detail, problem="no balance")
        if "throughput exceeded" in text:  # slow down: a retry later (or the other site) takes it
            return Result(outcome=Outcome.UNAVAILABLE, detail=detail)
        return Result(outcome=Outcome.REJECTED, detail=detail)  # a value filter refused this message
    if status == 412 and "No route found" not in text:
        # "Failover route has no bound connectors": Jasmin's own upstream is down.
        return Result(outcome=Outcome.UNAVAILABLE, detail=detail)
    if status in (400, 412):
        return Result(outcome=Outcome.REJECTED, detail=detail)
    if status >= 500:
        # Jasmin answers 5xx before it queues anything (no SMPP connector, internal error).
        return Result(outcome=Outcome.UNAVAILABLE, detail=detail)
    if 200 <= status < 300:
        return Result(outcome=Outcome.AMBIGUOUS, detail=detail)
    # 401, 404 and the like: the relay's configuration is wrong, not the message; fail over.
    return Result(outcome=Outcome.UNAVAILABLE, detail=detail, problem=f"HTTP {status} from Jasmin")
