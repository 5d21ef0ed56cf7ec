"""Group publish: the jobs of concurrent submits for one site share one persistent broker message.

As the store writer's group commit shares one transaction among concurrent submits, the bundler shares
one publish: jobs added while the event loop is busy go out together, one confirmed message per site (up
to `bundle_max` jobs each), on the loop's next turn. The broker then stores, delivers and acks a bundle
once instead of once per job, which is most of the broker's and the workers' cost per message. An idle
ingress adds no wait: a lone job leaves on the next turn of the loop, alone.

Every job's future resolves with its bundle's confirm, or fails with the bundle's error, so each submit
still answers only once its own messages are durable (or spools them when the bundle was not confirmed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from ingress.metrics import BUNDLE_JOBS
from shared.envelope import encode_jobs
from shared.errors import BrokerUnavailable
from shared.model import Job

# publish(body, site, message_id): returns once confirmed; raises when the broker did not confirm.
Publish = Callable[[bytes, str, str], Awaitable[None]]


class Bundler:
    def __init__(self, *, publish: Publish, bundle_max: int, in_flight_max: int) -> None:
        self._publish = publish
        self._bundle_max = bundle_max
        # Bundles awaiting their confirm at once: enough to keep the broker busy, few enough that jobs
        # arriving meanwhile gather into full bundles rather than many small ones.
        self._in_flight_max = in_flight_max
        self._in_flight = 0
        self._pending: dict[str, list[tuple[Job, asyncio.Future[None]]]] = {}
        self._flush_scheduled = False
        self._sending: dict[asyncio.Task[None], list[tuple[Job, asyncio.Future[None]]]] = {}

    async def close(self) -> None:
        """Stop the publishes still waiting for a confirm; their submits spool what they carried."""
        sending = list(self._sending)
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)

    def add(self, job: Job, site: str) -> asyncio.Future[None]:
        """A future done once `job` is confirmed by the broker, failed when its bundle was not."""
        loop = asyncio.get_running_loop()
        confirmed: asyncio.Future[None] = loop.create_future()
        self._pending.setdefault(site, []).append((job, confirmed))
        self._schedule_flush(loop)
        return confirmed

    def _schedule_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._flush_scheduled and self._in_flight < self._in_flight_max:
            self._flush_scheduled = True
            loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        while self._pending and self._in_flight < self._in_flight_max:
            site, waiting = next(iter(self._pending.items()))
            bundle, rest = waiting[: self._bundle_max], waiting[self._bundle_max :]
            del self._pending[site]
            if rest:  # to the back: a site with a long wait cannot hold up the others
                self._pending[site] = rest
            self._in_flight += 1
            self._start(site, bundle)

    def _start(self, site: str, bundle: list[tuple[Job, asyncio.Future[None]]]) -> None:
        # Kept in `_sending` until done (ruff cannot see a reference stored as a dict key).
        sending = asyncio.ensure_future(self._send(site, [job for job, _ in bundle]))  # noqa: RUF006
        self._sending[sending] = bundle
        # A callback rather than the task's own code: a task cancelled before it ever ran still reports
        # to every job of its bundle.
        sending.add_done_callback(self._sent)

    async def _send(self, site: str, jobs: list[Job]) -> None:
        BUNDLE_JOBS.observe(len(jobs))
        await self._publish(encode_jobs(jobs), site, jobs[0].id)

    def _sent(self, task: asyncio.Task[None]) -> None:
        bundle = self._sending.pop(task)
        self._in_flight -= 1
        failure = BrokerUnavailable("publish cancelled") if task.cancelled() else task.exception()
        for _, confirmed in bundle:
            if confirmed.done():
                continue
            if failure is None:
                confirmed.set_result(None)
            else:
                confirmed.set_exception(failure)
                # A submit that stopped waiting never reads it; read it so asyncio does not warn.
                confirmed.exception()
        if self._pending:
            self._schedule_flush(asyncio.get_running_loop())
