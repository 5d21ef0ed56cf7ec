"""Group publish of delivery reports: the reports of concurrent report requests share one persistent
broker message, as the jobs of concurrent submits do (`ingress.bundler`).

Each request still waits for the confirm of the message that carries its report before the platform is
answered, so a report is durable before its platform hears so; only the broker's (and the recorder's)
work is shared. An idle ingress adds no wait: a lone report leaves on the next turn of the loop, alone.
Measured under the reports benchmark, a confirmed publish per report was the larger part of the
ingress's CPU per report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ingress.metrics import REPORT_BUNDLE
from shared.broker import Fate, Verdict
from shared.envelope import encode_reports
from shared.model import DeliveryReport

Waiting = list[tuple[DeliveryReport, asyncio.Future[Verdict]]]
NO_CONFIRM = Verdict(Fate.UNKNOWN, "no confirm in time")


class ReportBundler:
    def __init__(
        self, *, publish: Callable[[bytes], Awaitable[Verdict]], bundle_max: int, in_flight_max: int
    ) -> None:
        self._publish = publish
        self._bundle_max = bundle_max
        self._in_flight_max = in_flight_max
        self._pending: Waiting = []
        self._flush_scheduled = False
        self._sending: dict[asyncio.Task[Verdict], Waiting] = {}

    def add(self, report: DeliveryReport, *, wait_s: float | None = None) -> asyncio.Future[Verdict]:
        """A future of the broker's verdict on the message that carries `report`. Cancelling it (a
        request that stops waiting) leaves the report out if its message has not left yet. With
        `wait_s`, a verdict not given by then is `NO_CONFIRM` (and the report left out the same way):
        a bare timer, where an `asyncio.timeout` per request was a measurable part of a report's CPU."""
        loop = asyncio.get_running_loop()
        verdict: asyncio.Future[Verdict] = loop.create_future()
        if wait_s is not None:
            loop.call_later(wait_s, _expire, verdict)
        self._pending.append((report, verdict))
        self._schedule_flush(loop)
        return verdict

    async def close(self) -> None:
        sending = list(self._sending)
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)

    def _schedule_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._flush_scheduled and len(self._sending) < self._in_flight_max:
            self._flush_scheduled = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._pending and len(self._sending) < self._in_flight_max:
            waiting = [(report, verdict) for report, verdict in self._pending if not verdict.done()]
            bundle, self._pending = waiting[: self._bundle_max], waiting[self._bundle_max :]
            if not bundle:
                continue
            REPORT_BUNDLE.observe(len(bundle))
            # Kept in `_sending` until done (ruff cannot see a reference stored as a dict key).
            task = asyncio.ensure_future(self._publish(encode_reports([r for r, _ in bundle])))  # noqa: RUF006
            self._sending[task] = bundle
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[Verdict]) -> None:
        bundle = self._sending.pop(task)
        if task.cancelled():
            verdict = Verdict(Fate.UNKNOWN, "stopped waiting for the confirm")
        elif (error := task.exception()) is not None:
            verdict = Verdict(Fate.UNKNOWN, f"publish failed: {error!r}")
        else:
            verdict = task.result()
        for _, waiting in bundle:
            if not waiting.done():
                waiting.set_result(verdict)
        if self._pending:
            self._schedule_flush(asyncio.get_running_loop())


def _expire(verdict: asyncio.Future[Verdict]) -> None:
    if not verdict.done():
        verdict.set_result(NO_CONFIRM)
