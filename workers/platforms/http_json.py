"""Adapter of the http-json (CM-style) platform contract: batches of up to 100 messages per request."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from shared.http1 import Http1Client, TransportFailure
from shared.model import Job, Outcome
from shared.reports import ReportUrls
from workers.platforms.base import Result, attempt_of
from workers.platforms.http_client import HttpRequester, classify_transport_error, short

MAX_BATCH = 100

# Whole-request answers that say "this request's content is bad": the same bytes will be refused again.
_CONTENT_REFUSED = frozenset({400, 413, 422})
# Answers that say the platform is not taking traffic now (overload, maintenance, throttling).
_NOT_TAKING = frozenset({408, 425, 429, 503})
_HEADERS = [("Content-Type", "application/json"), ("Accept", "application/json")]


class HttpJsonPlatform:
    """Sends jobs to a platform that speaks the http-json contract; never raises for its behaviour."""

    def __init__(
        self,
        *,
        url: str,
        token: str | None,
        timeout_s: float,
        batch_size: int = 1,
        concurrency: int = 64,
        client: HttpRequester | None = None,
        reports: ReportUrls | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH}")
        self.max_batch = batch_size
        self._http = client or Http1Client(url=url, timeout_s=timeout_s, size=concurrency)
        self._target = Http1Client.target_of(url)
        self._token = token or ""
        self._reports = reports  # None: ask the platform for no delivery reports

    async def send(self, jobs: Sequence[Job], *, attempts: Sequence[int] = ()) -> list[Result]:
        results: list[Result] = []
        for start in range(0, len(jobs), self.max_batch):
            batch = jobs[start : start + self.max_batch]
            callbacks = [self._callback(job, attempt_of(attempts, start + i)) for i, job in enumerate(batch)]
            results.extend(await self._send_batch(batch, callbacks))
        return results

    def _callback(self, job: Job, attempt: int) -> str | None:
        return self._reports.for_attempt(job.id, attempt) if self._reports is not None else None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send_batch(self, jobs: Sequence[Job], callbacks: Sequence[str | None]) -> list[Result]:
        content = encode_submit(jobs, token=self._token, callbacks=callbacks)
        try:
            answer = await self._http.request("POST", self._target, headers=_HEADERS, body=content)
        except TransportFailure as exc:
            return [classify_transport_error(exc)] * len(jobs)
        results = classify_answer(answer.status, answer.body, jobs)
        if results is None:
            # The platform refused the request as a whole without saying which message is at fault. Send
            # each alone, so one bad message does not take 99 good ones down with it.
            results = []
            for job, callback in zip(jobs, callbacks, strict=True):
                results.extend(await self._send_batch([job], [callback]))
        return results


def encode_submit(jobs: Sequence[Job], *, token: str, callbacks: Sequence[str | None] = ()) -> bytes:
    messages = [_message(job, callbacks[i] if i < len(callbacks) else None) for i, job in enumerate(jobs)]
    return orjson.dumps({"messages": {"authentication": {"producttoken": token}, "msg": messages}})


def _message(job: Job, callback: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "from": job.sender,
        "to": [{"number": job.to}],
        "body": {"type": "auto", "content": job.body},
        "reference": job.id,
    }
    if callback is not None:
        # Where the platform posts this attempt's delivery reports; it names the relay message and attempt.
        message["callback"] = callback
    if job.expires_at > 0:
        message["validity"] = _validity(int(job.expires_at))
    return message


@functools.lru_cache(maxsize=256)
def _validity(expires_at_s: int) -> str:
    # Jobs submitted in the same second mostly share their expiry second: the text is made once for them.
    return datetime.fromtimestamp(expires_at_s, tz=UTC).isoformat(timespec="seconds")


def classify_answer(status: int, body: bytes, jobs: Sequence[Job]) -> list[Result] | None:
    """One result per job from the platform's HTTP answer; None when the batch must be split and resent."""
    answer = _json_object(body)
    per_message = _per_message(answer, jobs) if answer is not None else None
    if 200 <= status < 300:
        if per_message is None:
            # Taken or not? A 2xx we cannot read may well mean the messages were taken.
            return [
                Result(outcome=Outcome.AMBIGUOUS, detail=short(f"HTTP {status}: unreadable answer"))
            ] * len(jobs)
        return per_message
    if status in _CONTENT_REFUSED:
        if per_message is not None:
            return per_message
        if len(jobs) > 1:
            return None
        return [Result(outcome=Outcome.REJECTED, detail=_whole_detail(status, answer, body))]
    if status in _NOT_TAKING:
        return [Result(outcome=Outcome.UNAVAILABLE, detail=_whole_detail(status, answer, body))] * len(jobs)
    if 400 <= status < 500:
        # 401/403/404/405 and the like say the relay is set up wrong (token, address), not that the
        # message is bad. Dead-lettering every message for that would be wrong: treat the platform as
        # unavailable so traffic fails over and the operator fixes the configuration.
        return [Result(outcome=Outcome.UNAVAILABLE, detail=_whole_detail(status, answer, body))] * len(jobs)
    if _platform_processed_nothing(answer):
        # A structured error from the platform application itself, saying it processed none of them.
        return [Result(outcome=Outcome.UNAVAILABLE, detail=_whole_detail(status, answer, body))] * len(jobs)
    # A bare 5xx (a proxy's 502/504, a crash mid-request): the platform may have taken them.
    return [Result(outcome=Outcome.AMBIGUOUS, detail=_whole_detail(status, answer, body))] * len(jobs)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return answer if isinstance(answer, dict) else None


def _per_message(answer: dict[str, Any], jobs: Sequence[Job]) -> list[Result] | None:
    """Per-message results matched by reference, or None when the answer carries none."""
    items = answer.get("messages")
    if not isinstance(items, list) or not items:
        return None
    by_reference: dict[str, Result] = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("reference"), str):
            by_reference[item["reference"]] = _message_result(item)
    if not by_reference:
        return None
    missing = Result(outcome=Outcome.AMBIGUOUS, detail="no answer for this message in the platform's reply")
    return [by_reference.get(job.id, missing) for job in jobs]


def _message_result(item: dict[str, Any]) -> Result:
    status = item.get("status")
    details = item.get("messageDetails")
    code = item.get("messageErrorCode")
    if status == "Accepted":
        return Result(outcome=Outcome.ACCEPTED, detail="Accepted")
    if status == "Rejected":
        text = details if isinstance(details, str) and details else "Rejected"
        return Result(outcome=Outcome.REJECTED, detail=short(f"{code}: {text}" if code else text))
    return Result(outcome=Outcome.AMBIGUOUS, detail=short(f"unknown message status {status!r}"))


def _platform_processed_nothing(answer: dict[str, Any] | None) -> bool:
    if answer is None:
        return False
    code = answer.get("errorCode")
    items = answer.get("messages")
    return isinstance(code, int) and code != 0 and isinstance(items, list) and not items


def _whole_detail(status: int, answer: dict[str, Any] | None, body: bytes) -> str:
    if answer is not None and ("details" in answer or "errorCode" in answer):
        return short(f"HTTP {status}: {answer.get('errorCode')} {answer.get('details') or ''}".rstrip())
    return short(f"HTTP {status}: {body[:120].decode('utf-8', errors='replace')}".rstrip(": "))
