"""Messages as the consumers hand them over: decoded into jobs, held, and queued for a request slot."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aio_pika.abc import AbstractIncomingMessage

from shared.envelope import ID_CHARS, UnreadableJob, decode_job_items
from shared.errors import EnvelopeError
from shared.model import DeadReason, Job, Outcome, Status, new_message_id
from workers.batching import take_batch
from workers.lanes import LaneQueue
from workers.outcomes import Outcomes
from workers.policy import DeliveryState
from workers.settlement import Held, Settlement


class Intake:
    def __init__(self, *, settlement: Settlement, outcomes: Outcomes) -> None:
        self._settlement = settlement
        self._outcomes = outcomes
        self._waiting: asyncio.Queue[Held] = LaneQueue()

    async def receive(self, message: AbstractIncomingMessage, queue_site: str) -> None:
        """The consumers' callback: hold the message's jobs and queue them."""
        for held in await self.hold(message, queue_site):
            self._waiting.put_nowait(held)

    async def hold(self, message: AbstractIncomingMessage, queue_site: str) -> list[Held]:
        """Track a delivered message and its jobs; the jobs that cannot be read are dead-lettered at once,
        each under its own id, and the others returned."""
        state = DeliveryState.from_headers(
            message.headers, queue_site=queue_site, redelivered=bool(message.redelivered)
        )
        try:
            items = decode_job_items(message.body)
        except EnvelopeError as exc:  # not even the envelope: one dead letter keeps the body whole
            body = message.body.decode("utf-8", "replace")
            items = [UnreadableJob(id=message.message_id, text=body, error=str(exc))]
        jobs = [item if isinstance(item, Job) else _placeholder_job(item) for item in items]
        held = self._settlement.hold(message, queue_site=queue_site, jobs=jobs, state=state)
        readable: list[Held] = []
        unreadable: list[Awaitable[None]] = []
        for job, item in zip(held, items, strict=True):
            if isinstance(item, UnreadableJob):
                unreadable.append(self._malformed(job, item.error, attempts=state.attempt))
            else:
                readable.append(job)
        if unreadable:  # rare: an empty gather still makes a future to await
            await asyncio.gather(*unreadable)
        return readable

    def put(self, held: Held) -> None:
        self._waiting.put_nowait(held)

    def empty(self) -> bool:
        return self._waiting.empty()

    async def next_batch(self, *, max_batch: int) -> list[Held]:
        """The next jobs for one platform request (see `workers.batching`)."""
        return await take_batch(self._waiting, max_batch=max_batch)

    def take_all(self) -> list[Held]:
        """Every job waiting now, taken out of the queue."""
        taken: list[Held] = []
        while True:
            try:
                taken.append(self._waiting.get_nowait())
            except asyncio.QueueEmpty:
                return taken

    async def _malformed(self, held: Held, error: str, *, attempts: int) -> None:
        await self._outcomes.dead(
            held,
            reason=DeadReason.MALFORMED,
            detail=error[:200],
            attempts=attempts,
            outcome=Outcome.REJECTED,
            status=Status.DEAD,
        )


def _placeholder_job(unreadable: UnreadableJob) -> Job:
    """A job that keeps an unreadable one whole in the dead-letter store, so an operator can see it."""
    return Job(
        id=(unreadable.id or new_message_id())[:ID_CHARS],
        tenant="",
        to="",
        sender="",
        body=unreadable.text,
        expires_at=0.0,
    )
