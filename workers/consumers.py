"""The consumers of one worker: its own site's queue at high priority, every other site's at standby."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, ConsumerTag

from shared.logs import get_logger
from shared.topology import OWN_SITE_PRIORITY, STANDBY_PRIORITY

log = get_logger(__name__)

CANCEL_TIMEOUT_S = 2.0

OnMessage = Callable[[AbstractIncomingMessage, str], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class SiteQueue:
    site: str  # whose jobs the queue holds
    queue: AbstractQueue
    priority: int


class Consumers:
    """Starts and cancels all of a worker's consumers together.

    `stopped` is set while no consumer runs: jobs handed back (nack with requeue) before the cancel is
    complete would go straight back to this worker, the highest-priority consumer of its own queue.
    """

    def __init__(self, *, own: SiteQueue, standby: list[SiteQueue], on_message: OnMessage) -> None:
        self._queues = [own, *standby]
        self._on_message = on_message
        self._tags: list[tuple[SiteQueue, ConsumerTag]] = []
        # A cancel that overlapped a start could miss the consumers the start adds after it.
        self._lock = asyncio.Lock()
        self.stopped = asyncio.Event()
        self.stopped.set()

    @classmethod
    def for_site(
        cls,
        *,
        own: AbstractQueue,
        own_site: str,
        standby: dict[str, AbstractQueue],
        on_message: OnMessage,
        bulk: dict[str, AbstractQueue] | None = None,
    ) -> Consumers:
        """`bulk`: every site's bulk queue, consumed like its jobs queue (own site high, others standby)."""
        bulk_queues = [
            SiteQueue(site=s, queue=q, priority=OWN_SITE_PRIORITY if s == own_site else STANDBY_PRIORITY)
            for s, q in sorted((bulk or {}).items())
        ]
        return cls(
            own=SiteQueue(site=own_site, queue=own, priority=OWN_SITE_PRIORITY),
            standby=[
                *(SiteQueue(site=s, queue=q, priority=STANDBY_PRIORITY) for s, q in sorted(standby.items())),
                *bulk_queues,
            ],
            on_message=on_message,
        )

    @property
    def queues(self) -> list[SiteQueue]:
        return list(self._queues)

    @property
    def running(self) -> bool:
        return bool(self._tags)

    async def start(self) -> None:
        async with self._lock:
            if self._tags:
                return
            self.stopped.clear()
            for site_queue in self._queues:
                tag = await site_queue.queue.consume(
                    self._callback(site_queue.site), arguments={"x-priority": site_queue.priority}
                )
                self._tags.append((site_queue, tag))
            log.info("consumers started", queues=[q.queue.name for q in self._queues])

    async def cancel(self) -> None:
        async with self._lock:
            tags, self._tags = self._tags, []
            for site_queue, tag in tags:
                try:
                    await site_queue.queue.cancel(tag, timeout=CANCEL_TIMEOUT_S)
                except Exception as exc:  # a lost channel cancels its consumers anyway
                    log.warning("consumer cancel failed", queue=site_queue.queue.name, error=repr(exc))
            self.stopped.set()
            if tags:
                log.info("consumers cancelled", queues=[q.queue.name for q, _ in tags])

    def _callback(self, site: str) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        async def on_message(message: AbstractIncomingMessage) -> None:
            await self._on_message(message, site)

        return on_message
