"""Settling the broker messages a worker holds: one job each, or a bundle of jobs that part ways.

A message is acked once every job it carries has an outcome durable elsewhere, nacked back whole when every
job is handed back unsent, and when only some are handed back, those go back to the queue as a bundle of
their own (confirmed) before the message is acked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import ChannelInvalidStateError

from shared.envelope import H_POSSIBLE_DUPLICATE, encode_jobs
from shared.errors import TransientError
from shared.logs import get_logger
from shared.model import Job
from shared.topology import site_queue
from workers.policy import DEFAULT_EXCHANGE, DeliveryState

log = get_logger(__name__)


class Publisher(Protocol):
    """What a worker needs of `shared.broker.ConfirmedPublisher`: a publish that returns once confirmed."""

    async def publish(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> None: ...


@dataclass(slots=True, eq=False, kw_only=True)
class Carrier:
    """A message this worker holds unacked, and what became of the jobs it carries."""

    message: AbstractIncomingMessage
    queue_site: str
    state: DeliveryState  # of every job it carries
    size: int
    unsettled: int
    handed_back: list[Job] = field(default_factory=list)
    lost: bool = False  # its channel is gone: the broker has put it back already


@dataclass(slots=True, eq=False, kw_only=True)
class Held:
    """A job this worker holds unacked."""

    carrier: Carrier
    job: Job
    settled: bool = False

    @property
    def state(self) -> DeliveryState:
        return self.carrier.state

    @property
    def stale(self) -> bool:
        """Its channel is gone, and with it the whole message: the broker has put it back already."""
        try:
            _ = self.carrier.message.channel
        except ChannelInvalidStateError:
            return True
        return False


class Settlement:
    """Tracks the messages held and settles each once all its jobs are settled (`ack`, `nack`, `forget`)."""

    def __init__(self, *, publisher: Publisher, prefix: str) -> None:
        self._publisher = publisher
        self._prefix = prefix
        self.in_flight = 0  # jobs held unacked; the metric reads it at each scrape

    def hold(
        self, message: AbstractIncomingMessage, *, queue_site: str, jobs: Sequence[Job], state: DeliveryState
    ) -> list[Held]:
        """Track a delivered message and the jobs it carries, in order."""
        carrier = Carrier(
            message=message, queue_site=queue_site, state=state, size=len(jobs), unsettled=len(jobs)
        )
        self.in_flight += len(jobs)
        return [Held(carrier=carrier, job=job) for job in jobs]

    def forget(self, held: Held) -> None:
        """A stale job: its message needs no ack or nack (and cannot take one)."""
        if not held.settled:
            self._release(held).lost = True

    async def ack(self, held: Held) -> None:
        """The job's outcome is durable elsewhere."""
        if not held.settled:
            await self._settle(self._release(held))

    async def nack(self, held: Held) -> None:
        """The job goes back to its queue unsent."""
        if not held.settled:
            carrier = self._release(held)
            carrier.handed_back.append(held.job)
            await self._settle(carrier)

    def _release(self, held: Held) -> Carrier:
        held.settled = True
        self.in_flight -= 1
        carrier = held.carrier
        carrier.unsettled -= 1
        return carrier

    async def _settle(self, carrier: Carrier) -> None:
        if carrier.unsettled or carrier.lost:
            return
        message = carrier.message
        returned = carrier.handed_back
        try:
            if returned and (len(returned) == carrier.size or not await self._requeue(carrier)):
                await message.nack(requeue=True)
            else:
                await message.ack()
        except Exception as exc:  # channel lost: the broker redelivers it
            log.warning("ack or nack failed", message_id=message.message_id, error=repr(exc))

    async def _requeue(self, carrier: Carrier) -> bool:
        """Put a bundle's handed-back jobs back in its queue, as the bundle they were, confirmed."""
        jobs = carrier.handed_back
        headers = dict(carrier.message.headers or {})
        if carrier.state.possible_duplicate:
            # The copy is a new message, not a redelivered one: the mark travels in its headers.
            headers[H_POSSIBLE_DUPLICATE] = True
        try:
            await self._publisher.publish(
                encode_jobs(jobs),
                exchange=DEFAULT_EXCHANGE,
                routing_key=site_queue(self._prefix, carrier.queue_site),
                message_id=jobs[0].id,
                headers=headers,
            )
        except TransientError as exc:
            # Nacked whole instead: the jobs of the bundle that were settled may then come again.
            log.warning("hand-back of part of a bundle not confirmed", jobs=len(jobs), error=str(exc))
            return False
        return True
