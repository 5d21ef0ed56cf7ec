"""Adapter of Jasmin's HTTP API `/send`: one message per request, form-encoded POST."""

from __future__ import annotations

from urllib.parse import urlencode

from shared.model import Job, Outcome
from workers.platforms.base import Result
from workers.platforms.http1 import HttpAnswer
from workers.platforms.http_client import short
from workers.platforms.per_message import PerMessagePlatform

CODING_DEFAULT = 0  # SMSC default alphabet
CODING_UCS2 = 8
_FORM = [("Content-Type", "application/x-www-form-urlencoded")]
_REJECTING = frozenset({400, 403, 412})  # bad request, not authorised / no balance, no route


class JasminPlatform(PerMessagePlatform):
    """Sends each job as one POST to Jasmin's `/send`; non-GSM text goes as UTF-16BE hex with coding 8."""

    def form(self, job: Job) -> dict[str, str]:
        form = {"username": self._username, "password": self._password, "to": job.to, "from": job.sender}
        if job.encoding == "gsm7":
            form.update(content=job.body, coding=str(CODING_DEFAULT))
        else:
            # Jasmin's `content` is latin-1; anything else must go as raw UCS-2 bytes in hex.
            form.update({"hex-content": job.body.encode("utf-16-be").hex(), "coding": str(CODING_UCS2)})
        return form

    async def _request(self, job: Job) -> HttpAnswer:
        body = urlencode(self.form(job)).encode()
        return await self._http.request("POST", self._target, headers=_FORM, body=body)

    def _classify(self, answer: HttpAnswer) -> Result:
        return classify_answer(answer.status, answer.body)


def classify_answer(status: int, body: bytes) -> Result:
    text = short(body)
    if status == 200 and text.startswith("Success"):
        return Result(outcome=Outcome.ACCEPTED, detail=text)
    if status in _REJECTING:
        return Result(outcome=Outcome.REJECTED, detail=short(f"HTTP {status}: {text}"))
    if status >= 500:
        # Jasmin answers 5xx before it queues anything (no SMPP connector, internal error).
        return Result(outcome=Outcome.UNAVAILABLE, detail=short(f"HTTP {status}: {text}"))
    if 200 <= status < 300:
        return Result(outcome=Outcome.AMBIGUOUS, detail=short(f"HTTP {status}: {text}"))
    # 401, 404 and the like: the relay's configuration is wrong, not the message; fail over.
    return Result(outcome=Outcome.UNAVAILABLE, detail=short(f"HTTP {status}: {text}"))
