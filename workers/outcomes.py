"""What becomes of a job after its attempt, or instead of one: settled, retried, failed over, dead-lettered.

Nothing is acked before what replaces it is confirmed by the broker: the attempt record for a delivered
job; the retry or hand-over republish and its record; the dead letter and its record. When a confirm does
not come, the job goes back to its queue unacked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.envelope import encode_dead, encode_job
from shared.errors import TransientError
from shared.logs import get_logger
from shared.model import AttemptRecord, DeadReason, Outcome, Status
from shared.settings import WorkerSettings
from shared.topology import Topology, dead_exchange
from workers.circuit import Circuit
from workers.metrics import WorkerMetrics
from workers.platforms.base import Result
from workers.policy import GiveUp, Retry, after_failure, elsewhere
from workers.settlement import Held, Publisher, Settlement

log = get_logger(__name__)

# How long a failed job waits for the breaker's verdict before it is retried at the same site.
FAILURE_VERDICT_WAIT_S = 0.25
# Outcomes of an attempt that may have left a copy at the platform. A refusal leaves none, an unavailable
# attempt never arrived: a job's possible-duplicate mark waits for an attempt that may have left one.
_MAY_LEAVE_A_COPY = frozenset({Outcome.ACCEPTED, Outcome.AMBIGUOUS})


class Recorder(Protocol):
    """What outcomes need of `workers.events.EventSink`."""

    def record(self, record: AttemptRecord) -> Awaitable[None]: ...


@dataclass(slots=True)
class Totals:
    """What a worker reports in its heartbeat, since it started."""

    delivered: int = 0
    failed_over: int = 0


class Outcomes:
    def __init__(
        self,
        *,
        site: str,
        worker_id: str,
        settings: WorkerSettings,
        topology: Topology,
        publisher: Publisher,
        recorder: Recorder,
        settlement: Settlement,
        circuit: Circuit,
        metrics: WorkerMetrics,
        segment_limits: Mapping[str, int],
    ) -> None:
        self._site = site
        self._worker_id = worker_id
        self._settings = settings
        self._topology = topology
        self._publisher = publisher
        self._recorder = recorder
        self._settlement = settlement
        self._circuit = circuit
        self._metrics = metrics
        self._segment_limits = dict(segment_limits)
        self._max_segments = segment_limits[site]
        self.totals = Totals()
        # Labelled children looked up once: `labels()` per message shows in profiles.
        self._deliveries = {o: metrics.deliveries.labels(site=site, outcome=o.value) for o in Outcome}

    async def settle_all(self, sent: Sequence[Held], results: Sequence[Result], latency_ms: float) -> None:
        """Settle the jobs of one platform request by their results; the accepted ones together."""
        settling: list[Awaitable[None]] = []
        accepted: list[Held] = []
        for held, result in zip(sent, results, strict=True):
            if result.outcome is Outcome.ACCEPTED:
                accepted.append(held)
            else:
                settling.append(self.settle(held, result, latency_ms))
        if accepted:
            settling.append(self._settle_accepted(accepted, latency_ms))
        if len(settling) == 1:  # the common case: no task for gather to make
            await settling[0]
        else:
            await asyncio.gather(*settling)

    async def settle(self, held: Held, result: Result, latency_ms: float) -> None:
        """Settle one job by the result of its attempt."""
        self._deliveries[result.outcome].inc()
        attempt = held.state.attempt + 1
        if result.outcome is Outcome.ACCEPTED:
            self._circuit.success()
            record = self._record(held, attempt, result, latency_ms, Status.SENT)
            if await self._confirmed(held, self._recorder.record(record)):
                self.totals.delivered += 1
                await self._settlement.ack(held)
        elif result.outcome is Outcome.REJECTED:
            self._circuit.success()
            await self.dead(
                held,
                reason=DeadReason.REJECTED,
                detail=result.detail,
                attempts=attempt,
                outcome=Outcome.REJECTED,
                status=Status.REJECTED,
                latency_ms=latency_ms,
            )
        elif result.outcome is Outcome.EXPIRED:
            await self.expire(held)
        else:
            self._circuit.failure()
            await self._after_failure(held, result, latency_ms)

    async def hand_back(self, held: Held, *, failover: bool) -> None:
        """The job goes back to its queue unsent; `failover` when that is because its site is failing."""
        if failover:
            self.totals.failed_over += 1
            self._metrics.failovers.labels(site=self._site, kind="requeue").inc()
        await self._settlement.nack(held)

    async def expire(self, held: Held) -> None:
        await self.dead(
            held,
            reason=DeadReason.EXPIRED,
            detail="validity ran out before delivery",
            attempts=held.state.attempt,
            outcome=Outcome.EXPIRED,
            status=Status.EXPIRED,
        )

    def carries(self, held: Held) -> bool:
        """The site's platform carries the job whole (`sites.<name>.max_segments`)."""
        return held.job.segments <= self._max_segments

    async def too_long(self, held: Held) -> None:
        """A job the site cannot carry whole goes, unsent, to a site that can; dead when none can."""
        segments = held.job.segments
        step = elsewhere(
            held.state,
            segments=segments,
            tried_site=self._site,
            limits=self._segment_limits,
            topology=self._topology,
        )
        if step is None:
            await self.dead(
                held,
                reason=DeadReason.REJECTED,
                detail=f"takes {segments} segments; sites carry at most {max(self._segment_limits.values())}",
                attempts=held.state.attempt,
                outcome=Outcome.REJECTED,
                status=Status.REJECTED,
            )
            return
        if await self._confirmed(held, self._republish(held, step)):
            # A standby take put back to wait for its own site is not news; a hand-over is.
            if step.switched_site:
                log.info(
                    "job longer than the site carries handed over",
                    message_id=held.job.id,
                    segments=segments,
                    site=self._site,
                    to=step.routing_key,
                )
                self.totals.failed_over += 1
                self._metrics.failovers.labels(site=self._site, kind="segments").inc()
            await self._settlement.ack(held)

    async def dead(
        self,
        held: Held,
        *,
        reason: DeadReason,
        detail: str,
        attempts: int,
        outcome: Outcome,
        status: Status,
        latency_ms: float | None = None,
    ) -> None:
        """Dead-letter the job and record its verdict, both confirmed, then ack it."""
        body = encode_dead(held.job, site=self._site, reason=reason, detail=detail, attempts=attempts)
        record = self._record(held, attempts, Result(outcome, detail), latency_ms, status)
        publish = self._publisher.publish(
            body, exchange=dead_exchange(self._topology.prefix), routing_key="", message_id=held.job.id
        )
        if await self._confirmed(held, publish, self._recorder.record(record)):
            self._metrics.dead_letters.labels(site=self._site, reason=reason.value).inc()
            log.info(
                "dead letter", message_id=held.job.id, reason=reason.value, detail=detail, site=self._site
            )
            await self._settlement.ack(held)

    async def _settle_accepted(self, batch: list[Held], latency_ms: float) -> None:
        """The common case in bulk: one confirmed event batch, then the acks."""
        self._deliveries[Outcome.ACCEPTED].inc(len(batch))
        self._circuit.success()
        accepted = Result(Outcome.ACCEPTED, "")
        confirms = [
            self._recorder.record(
                self._record(held, held.state.attempt + 1, accepted, latency_ms, Status.SENT)
            )
            for held in batch
        ]
        outcomes = await asyncio.gather(*confirms, return_exceptions=True)
        for held, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("event not confirmed; job goes back to its queue", message_id=held.job.id)
                await self._settlement.nack(held)
            else:
                self.totals.delivered += 1
                await self._settlement.ack(held)

    async def _after_failure(self, held: Held, result: Result, latency_ms: float) -> None:
        # Requests sent together fail together (a black hole times them all out at once): wait a moment
        # for the others' outcomes, so a job whose failure opens the breaker a few ms later goes straight
        # to the next site instead of a delay queue of the failing one.
        await self._circuit.verdict(timeout_s=FAILURE_VERDICT_WAIT_S)
        step = after_failure(
            held.state,
            tried_site=self._site,
            topology=self._topology,
            attempts_per_site=self._settings.attempts_per_site,
            max_attempts=self._settings.max_attempts,
            site_failing=not self._circuit.allows_traffic(),
        )
        if isinstance(step, GiveUp):
            await self.dead(
                held,
                reason=DeadReason.ATTEMPTS_EXHAUSTED,
                detail=result.detail,
                attempts=step.attempts,
                outcome=result.outcome,
                status=Status.DEAD,
                latency_ms=latency_ms,
            )
            return
        record = self._record(held, step.state.attempt, result, latency_ms, Status.RETRYING)
        if await self._confirmed(held, self._republish(held, step), self._recorder.record(record)):
            if step.switched_site:
                self.totals.failed_over += 1
                self._metrics.failovers.labels(site=self._site, kind="republish").inc()
            if step.delayed:
                self._metrics.retries.labels(site=self._site).inc()
            await self._settlement.ack(held)

    async def _republish(self, held: Held, step: Retry) -> None:
        # Alone in its message, the body goes on untouched; out of a bundle, the job travels alone.
        carrier = held.carrier
        await self._publisher.publish(
            carrier.message.body if carrier.size == 1 else encode_job(held.job),
            exchange=step.exchange,
            routing_key=step.routing_key,
            message_id=held.job.id,
            headers=step.state.headers(),
        )

    def _record(
        self, held: Held, attempt: int, result: Result, latency_ms: float | None, status: Status | None
    ) -> AttemptRecord:
        return AttemptRecord(
            message_id=held.job.id,
            site=self._site,
            attempt=attempt,
            outcome=result.outcome,
            detail=result.detail,
            latency_ms=latency_ms,
            worker=self._worker_id,
            status=status,
            possible_duplicate=held.state.possible_duplicate and result.outcome in _MAY_LEAVE_A_COPY,
            job=held.job,  # so the recorder can write the message's row if the ingress never did
        )

    async def _confirmed(self, held: Held, *publishes: Awaitable[None]) -> bool:
        """Await the confirms a job's ack depends on; on failure hand the job back unacked."""
        try:
            await asyncio.gather(*publishes)
        except TransientError as exc:
            log.warning(
                "broker did not confirm; job goes back to its queue", message_id=held.job.id, error=str(exc)
            )
            await self._settlement.nack(held)
            return False
        return True
