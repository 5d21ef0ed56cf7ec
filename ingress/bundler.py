"""Group publish: the jobs of concurrent submits for one site share one persistent broker message.

As the store writer's group commit shares one transaction among concurrent submits, the bundler shares
one publish: jobs added while the event loop is busy go out together, one confirmed message per site (up
to `bundle_max` jobs each), on the loop's next turn. The broker then stores, delivers and acks a bundle
once instead of once per job, which is most of the broker's and the workers' cost per message. An idle
ingress adds no wait: a lone job leaves on the next turn of the loop, alone.

Every job's future resolves with its bundle's verdict, however late it comes: a submit that stops
waiting takes back a job whose bundle has not left yet (`withdraw`), and spools one whose bundle has left
beside the publish, which the verdict then settles (see `ingress.spool`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ingress.metrics import BUNDLE_JOBS
from shared.broker import Fate, Verdict
from shared.envelope import encode_jobs
from shared.model import Job

# publish(body, site, message_id): the broker's verdict, however long it takes to come.
Publish = Callable[[bytes, str, str], Awaitable[Verdict]]
Waiting = list[tuple[Job, asyncio.Future[Verdict]]]


class Bundler:
    def __init__(self, *, publish: Publish, bundle_max: int, in_flight_max: int) -> None:
        self._publish = publish
        self._bundle_max = bundle_max
        # Bundles awaiting their confirm at once: enough to keep the broker busy, few enough that jobs
        # arriving meanwhile gather into full bundles rather than many small ones.
        self._in_flight_max = in_flight_max
        self._in_flight = 0
        self._pending: dict[str, Waiting] = {}
        self._flush_scheduled = False
        self._sending: dict[asyncio.Task[Verdict], Waiting] = {}
        self._left: set[asyncio.Future[Verdict]] = set()  # the jobs of bundles that have left

    async def close(self) -> None:
        """Stop waiting for the verdicts still to come; their jobs may be queued (`Fate.UNKNOWN`)."""
        sending = list(self._sending)
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)

    def add(self, job: Job, site: str) -> asyncio.Future[Verdict]:
        """A future of the broker's verdict on the bundle that carries `job`."""
        loop = asyncio.get_running_loop()
        verdict: asyncio.Future[Verdict] = loop.create_future()
        self._pending.setdefault(site, []).append((job, verdict))
        self._schedule_flush(loop)
        return verdict

    def withdraw(self, verdict: asyncio.Future[Verdict]) -> bool:
        """Take back the job of `verdict` if its bundle has not left yet (True: it never will); False
        when it has, and the verdict is still to come."""
        if verdict.done() or verdict in self._left:
            return False
        verdict.cancel()  # `_flush` leaves cancelled jobs out
        return True

    def _schedule_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._flush_scheduled and self._in_flight < self._in_flight_max:
            self._flush_scheduled = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._pending and self._in_flight < self._in_flight_max:
            site, waiting = next(iter(self._pending.items()))
            del self._pending[site]
            waiting = [(job, verdict) for job, verdict in waiting if not verdict.cancelled()]
            bundle, rest = waiting[: self._bundle_max], waiting[self._bundle_max :]
            if rest:  # to the back: a site with a long wait cannot hold up the others
                self._pending[site] = rest
            if bundle:
                self._in_flight += 1
                self._start(site, bundle)

    def _start(self, site: str, bundle: Waiting) -> None:
        # Kept in `_sending` until done (ruff cannot see a reference stored as a dict key).
        sending = asyncio.ensure_future(self._send(site, [job for job, _ in bundle]))  # noqa: RUF006
        self._sending[sending] = bundle
        self._left.update(verdict for _, verdict in bundle)
        # A callback rather than the task's own code: a task cancelled before it ever ran still reports
        # to every job of its bundle.
        sending.add_done_callback(self._sent)

    async def _send(self, site: str, jobs: list[Job]) -> Verdict:
        BUNDLE_JOBS.observe(len(jobs))
        return await self._publish(encode_jobs(jobs), site, jobs[0].id)

    def _sent(self, task: asyncio.Task[Verdict]) -> None:
        bundle = self._sending.pop(task)
        self._in_flight -= 1
        if task.cancelled():
            verdict = Verdict(Fate.UNKNOWN, "stopped waiting for the confirm")
        elif (error := task.exception()) is not None:
            verdict = Verdict(Fate.UNKNOWN, f"publish failed: {error!r}")
        else:
            verdict = task.result()
        for _, waiting in bundle:
            self._left.discard(waiting)
            if not waiting.done():
                waiting.set_result(verdict)
        if self._pending:
            self._schedule_flush(asyncio.get_running_loop())
