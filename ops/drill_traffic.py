"""The drill's test traffic: a bounded stream of messages at a bounded rate through the HTTP API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

DRILL_SENDER = "DRILL"
SUBMIT_TIMEOUT_S = 10.0


def submit_body(*, to: str, sender: str, text: str, reference: str | None = None) -> dict[str, Any]:
    """The JSON body of one `POST /v1/messages`."""
    body: dict[str, Any] = {"to": to, "from": sender, "body": text}
    if reference is not None:
        body["reference"] = reference
    return body


def drill_number(index: int) -> str:
    """A valid Dutch mobile number per message, so numbers differ without ever being invalid."""
    return f"+316{10_000_000 + index % 10_000_000}"


def message_id_from(answer: Any) -> str | None:
    """The relay's message id in a submit answer."""
    if isinstance(answer, dict):
        for key in ("id", "message_id"):
            value = answer.get(key)
            if isinstance(value, str) and value:
                return value
    return None


@dataclass(slots=True, kw_only=True)
class TrafficResult:
    accepted: dict[str, float] = field(default_factory=dict)  # relay message id -> time of the 2xx
    refused: dict[str, int] = field(default_factory=dict)  # answer ("HTTP 503", "ConnectError") -> count
    sent: int = 0
    sending_s: float = 0.0  # from the first send to the last answer, the pause for `resume` left out

    @property
    def rate_per_s(self) -> float:
        return self.sent / self.sending_s if self.sending_s > 0 else 0.0


class Traffic:
    """Sends `count` messages at `rate_per_s`, at most `concurrency` requests at once."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient,
        api_url: str,
        key: str,
        run_id: str,
        count: int,
        rate_per_s: float,
        # httpx's pool costs more CPU per request as concurrency grows: measured against a local
        # deployment, 16 requests at once sent about twice as many messages per second as 64.
        concurrency: int = 16,
    ) -> None:
        self._client = client
        self._url = f"{api_url}/v1/messages"
        self._headers = {"Authorization": f"Bearer {key}"}
        self._run_id = run_id
        self._count = count
        self._rate_per_s = rate_per_s
        self._slots = asyncio.Semaphore(concurrency)
        self.result = TrafficResult()

    @property
    def duration_s(self) -> float:
        return self._count / self._rate_per_s

    async def run(
        self,
        on_progress: Callable[[int], None] | None = None,
        *,
        pause_before: int | None = None,
        resume: asyncio.Event | None = None,
    ) -> TrafficResult:
        """Send everything; `on_progress(n)` after the n-th message is scheduled.

        With `pause_before` and `resume`, the message of that index waits until `resume` is set, and the
        rate starts again from there (no burst to catch up).
        """
        started = first_sent = time.monotonic()
        paused_s = 0.0
        tasks = []
        for index in range(self._count):
            if index == pause_before and resume is not None and not resume.is_set():
                pause_began = time.monotonic()
                await resume.wait()
                paused_s = time.monotonic() - pause_began
                started = time.monotonic() - index / self._rate_per_s
            due = started + index / self._rate_per_s
            delay_s = due - time.monotonic()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            await self._slots.acquire()
            tasks.append(asyncio.create_task(self._send(index)))
            if on_progress is not None:
                on_progress(index + 1)
        await asyncio.gather(*tasks)
        self.result.sending_s = time.monotonic() - first_sent - paused_s
        return self.result

    async def _send(self, index: int) -> None:
        body = submit_body(
            to=drill_number(index),
            sender=DRILL_SENDER,
            text=f"relay drill {self._run_id} message {index}",
            reference=f"drill-{self._run_id}-{index}",
        )
        try:
            self.result.sent += 1
            response = await self._client.post(
                self._url, json=body, headers=self._headers, timeout=SUBMIT_TIMEOUT_S
            )
            answer = response.json() if response.content else None
            message_id = message_id_from(answer)
            if response.is_success and message_id is not None:
                self.result.accepted[message_id] = time.time()
            else:
                self._refused(f"HTTP {response.status_code}")
        except httpx.HTTPError as exc:
            # No answer: the client cannot know whether it was accepted; it did not get an id, so the
            # drill cannot follow it and does not count it as accepted.
            self._refused(type(exc).__name__)
        except ValueError:
            self._refused("not JSON")
        finally:
            self._slots.release()

    def _refused(self, reason: str) -> None:
        self.result.refused[reason] = self.result.refused.get(reason, 0) + 1
