"""Messages as the consumers hand them over: decoded into jobs, held, and queued for a request slot."""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractIncomingMessage

from shared.envelope import decode_jobs
from shared.errors import EnvelopeError
from shared.model import DeadReason, Job, Outcome, Status, new_message_id
from workers.batching import take_batch
from workers.outcomes import Outcomes
from workers.policy import DeliveryState
from workers.settlement import Held, Settlement


class Intake:
    def __init__(self, *, settlement: Settlement, outcomes: Outcomes) -> None:
        self._settlement = settlement
        self._outcomes = outcomes
        self._waiting: asyncio.Queue[Held] = asyncio.Queue()

    async def receive(self, message: AbstractIncomingMessage, queue_site: str) -> None:
        """The consumers' callback: hold the message's jobs and queue them."""
        for held in await self.hold(message, queue_site):
            self._waiting.put_nowait(held)

    async def hold(self, message: AbstractIncomingMessage, queue_site: str) -> list[Held]:
        """Track a delivered message and its jobs; a body that is no job is dead-lettered at once."""
        state = DeliveryState.from_headers(message.headers, queue_site=queue_site)
        try:
            jobs = decode_jobs(message.body)
            malformed = None
        except EnvelopeError as exc:
            jobs = [_placeholder_job(message)]
            malformed = str(exc)[:200]
        held = self._settlement.hold(message, queue_site=queue_site, jobs=jobs, state=state)
        if malformed is not None:
            await self._outcomes.dead(
                held[0],
                reason=DeadReason.MALFORMED,
                detail=malformed,
                attempts=state.attempt,
                outcome=Outcome.REJECTED,
                status=Status.DEAD,
            )
            return []
        return held

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


def _placeholder_job(message: AbstractIncomingMessage) -> Job:
    """A job that keeps a malformed body whole in the dead-letter store, so an operator can see it."""
    return Job(
        id=(message.message_id or new_message_id())[:32],
        tenant="",
        to="",
        sender="",
        body=message.body.decode("utf-8", "replace"),
        expires_at=0.0,
    )
