"""Jobs published straight to the broker, as the ingress publishes them, and what the workers made of them
(their events and dead letters): traffic for a relay's workers without an ingress in front.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aio_pika

from ops.harness.deployment import SITES, settings_of
from shared.broker import ConfirmedPublisher
from shared.envelope import (
    H_ATTEMPT,
    H_ORIGIN,
    H_SITE,
    H_SITE_ATTEMPT,
    decode_dead,
    decode_events,
    encode_job,
    encode_jobs,
)
from shared.model import AttemptRecord, Job, Status, new_message_id
from shared.topology import dead_queue, declare, events_queue, jobs_exchange, site_queue, topology_from

STREAM_GROUP = 10  # jobs a stream publishes at once (bundled: one bundle per site)


def make_job(*, validity_s: float = 300.0, to: str = "+31612345678") -> Job:
    """A job as the ingress makes one, valid for `validity_s` from now."""
    now = time.time()
    return Job(
        id=new_message_id(),
        tenant="test",
        to=to,
        sender="Relay",
        body="failover test",
        accepted_at=now,
        expires_at=now + validity_s,
    )


class JobPublisher:
    """Publishes jobs persistent, mandatory and confirmed: one per message with its delivery headers at
    zero, or with `bundled` a stream's jobs for one site together as one bundle per group and no headers,
    as the ingress publishes concurrent submits."""

    def __init__(self, *, config: Path, bundled: bool = False) -> None:
        self.bundled = bundled
        self._settings = settings_of(config)
        self._broker_url = self._settings.broker.urls[0]
        self._prefix = self._settings.broker.prefix
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publisher: ConfirmedPublisher | None = None
        self.published: list[Job] = []
        self.site_of: dict[str, str] = {}
        self.records: list[AttemptRecord] = []
        self.dead: list[tuple[Job, dict[str, Any]]] = []

    async def __aenter__(self) -> JobPublisher:
        self._connection = await aio_pika.connect_robust(self._broker_url)
        self._publisher = await ConfirmedPublisher.open(self._connection, confirm_timeout_s=5.0)
        await declare(self._publisher.channel, topology_from(self._settings))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._connection is not None:
            await self._connection.close()

    async def reconnected(self, *, timeout_s: float = 30.0) -> None:
        """Wait until the robust connection is back after the broker went away."""
        assert self._connection is not None
        async with asyncio.timeout(timeout_s):
            await self._connection.ready()

    async def publish(self, job: Job, *, site: str) -> None:
        assert self._publisher is not None
        await self._publisher.publish(
            encode_job(job),
            exchange=jobs_exchange(self._prefix),
            routing_key=site,
            message_id=job.id,
            headers={H_ATTEMPT: 0, H_SITE_ATTEMPT: 0, H_SITE: site, H_ORIGIN: site},
        )
        self.published.append(job)
        self.site_of[job.id] = site

    async def publish_bundle(self, jobs: list[Job], *, site: str) -> None:
        assert self._publisher is not None
        await self._publisher.publish(
            encode_jobs(jobs), exchange=jobs_exchange(self._prefix), routing_key=site, message_id=jobs[0].id
        )
        self.published.extend(jobs)
        self.site_of.update(dict.fromkeys((job.id for job in jobs), site))

    async def stream(
        self,
        count: int,
        *,
        rate_per_s: float,
        sites: tuple[str, ...] = SITES,
        make: Callable[[], Job] = make_job,
    ) -> None:
        """Publish `count` jobs spread over the sites at about `rate_per_s` (in small confirmed groups)."""
        group = STREAM_GROUP
        interval_s = group / rate_per_s
        for start in range(0, count, group):
            began = time.monotonic()
            jobs = [make() for _ in range(min(group, count - start))]
            if self.bundled:
                await asyncio.gather(
                    *(
                        self.publish_bundle(jobs[i :: len(sites)], site=site)
                        for i, site in enumerate(sites)
                        if jobs[i :: len(sites)]
                    )
                )
            else:
                await asyncio.gather(
                    *(self.publish(job, site=sites[(start + i) % len(sites)]) for i, job in enumerate(jobs))
                )
            await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - began)))

    async def consumer_count(self, site: str) -> int:
        assert self._connection is not None
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(site_queue(self._prefix, site), passive=True)
            return int(queue.declaration_result.consumer_count or 0)
        finally:
            await channel.close()

    async def queue_depth(self, name: str) -> int:
        assert self._connection is not None
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            return int(queue.declaration_result.message_count or 0)
        finally:
            await channel.close()

    async def drain(self, name: str) -> list[bytes]:
        """Every message now in queue `name` (taken and acked)."""
        assert self._connection is not None
        bodies: list[bytes] = []
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(name, passive=True)
            while True:
                message = await queue.get(no_ack=False, fail=False, timeout=5)
                if message is None:
                    return bodies
                bodies.append(message.body)
                await message.ack()
        finally:
            await channel.close()

    async def events(self) -> list[AttemptRecord]:
        """Every attempt record so far about a job this publisher published."""
        mine = {job.id for job in self.published}
        for body in await self.drain(events_queue(self._prefix)):
            self.records.extend(r for r in decode_events(body) if r.message_id in mine)
        return list(self.records)

    async def dead_letters(self) -> list[tuple[Job, dict[str, Any]]]:
        """Every dead letter so far of a job this publisher published."""
        mine = {job.id for job in self.published}
        for body in await self.drain(dead_queue(self._prefix)):
            job, verdict = decode_dead(body)
            if job.id in mine:
                self.dead.append((job, verdict))
        return list(self.dead)

    async def final_statuses(self) -> dict[str, list[Status]]:
        finals: dict[str, list[Status]] = {}
        for record in await self.events():
            if record.status is not None and record.status.terminal:
                finals.setdefault(record.message_id, []).append(record.status)
        return finals

    async def wait_all_final(self, *, timeout_s: float) -> bool:
        """Wait until every published job has a terminal status in the events."""

        async def done() -> bool:
            finals = await self.final_statuses()
            return all(job.id in finals for job in self.published)

        return await wait_until(done, timeout_s=timeout_s, interval_s=0.25)


async def wait_until(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool], *, timeout_s: float, interval_s: float = 0.1
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return True
        await asyncio.sleep(interval_s)
    return False


async def wait_for_consumers(
    jobs: JobPublisher, expected: dict[str, int], *, timeout_s: float = 20.0
) -> None:
    async def ready() -> bool:
        counts = {site: await jobs.consumer_count(site) for site in expected}
        return all(counts[site] >= n for site, n in expected.items())

    if not await wait_until(ready, timeout_s=timeout_s, interval_s=0.2):
        raise TimeoutError(f"workers did not start consuming {expected} within {timeout_s} s")
