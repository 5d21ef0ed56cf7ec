"""One worker process of a site's pool: consume, deliver to the site's platform, settle every job.

Every job a worker holds ends in exactly one of: acked after its outcome is durable elsewhere (the
attempt record confirmed; a retry, hand-over or dead letter confirmed), or nacked back to its queue
unsent. Nothing is acked before what replaces it is confirmed by the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection
from aio_pika.exceptions import ChannelInvalidStateError

from shared.broker import ConfirmedPublisher, connect
from shared.envelope import decode_jobs, encode_dead, encode_job, encode_jobs
from shared.errors import ConfigError, EnvelopeError, TransientError
from shared.gc_tuning import freeze_startup_objects
from shared.logs import get_logger
from shared.model import AttemptRecord, CircuitState, DeadReason, Job, Outcome, Status, new_message_id
from shared.settings import Settings
from shared.topology import (
    dead_exchange,
    declare,
    events_exchange,
    heartbeat_exchange,
    site_queue,
    topology_from,
)
from workers.batching import take_batch
from workers.breaker import CircuitBreaker, Transition
from workers.consumers import Consumers
from workers.events import EventSink
from workers.heartbeat import HeartbeatSender
from workers.metrics import WorkerMetrics
from workers.platforms.base import Platform, Result
from workers.policy import DEFAULT_EXCHANGE, DeliveryState, GiveUp, Retry, after_failure

log = get_logger(__name__)

# Most messages one consumer holds (each carries one job, or a bundle of up to `ingress.bundle_max`).
# Batching platforms want several full requests' worth; more only floods the event loop with deliveries
# and delays the publisher confirms the acks wait for.
MAX_PREFETCH = 500
# Confirms the worker waits for (retries, dead letters, events). Not the ingress's short submit timeout:
# a worker has no spool to fall back on, and giving up early turns a slow broker into duplicates.
# Time kept back from the grace period to flush events and close the connection.
CLOSE_MARGIN_S = 0.5
PROBE_GET_TIMEOUT_S = 2.0
SUPERVISION_RETRY_S = 1.0
# How long a failed job waits for the breaker's verdict before it is retried at the same site.
FAILURE_VERDICT_WAIT_S = 0.25


@dataclass(slots=True, eq=False, kw_only=True)
class Carrier:
    """A message this worker holds unacked, and what became of the jobs it carries (one, or a bundle).

    It is acked once every job's outcome is durable elsewhere, nacked back whole when every job is handed
    back unsent, and when only some are handed back, those go back to the queue as a bundle of their own
    (confirmed) before the message is acked.
    """

    message: AbstractIncomingMessage
    queue_site: str
    size: int
    unsettled: int
    handed_back: list[Job] = field(default_factory=list)
    lost: bool = False  # its channel is gone: the broker has put it back already


@dataclass(slots=True, eq=False, kw_only=True)
class Held:
    """A job this worker holds unacked."""

    carrier: Carrier
    job: Job
    state: DeliveryState
    settled: bool = field(default=False)


class Worker:
    def __init__(
        self,
        *,
        settings: Settings,
        site: str,
        platform: Platform,
        concurrency: int | None = None,
        metrics: WorkerMetrics | None = None,
        metrics_port: int = 0,
    ) -> None:
        if site not in settings.sites:
            raise ConfigError(f"unknown site {site!r}: configured sites are {settings.site_names}")
        self.site = site
        self._settings = settings
        self._worker_settings = settings.worker
        self._platform = platform
        self._concurrency = concurrency or settings.worker.concurrency
        self._max_batch = max(1, platform.max_batch)
        self._topology = topology_from(settings)
        self._prefix = settings.broker.prefix
        self.metrics = metrics or WorkerMetrics(site=site)
        # Labelled children looked up once: `labels()` per message shows in profiles.
        self._deliveries = {o: self.metrics.deliveries.labels(site=site, outcome=o.value) for o in Outcome}
        self._in_flight_gauge = self.metrics.in_flight.labels(site=site)
        self._metrics_port = metrics_port
        self.breaker = CircuitBreaker(
            failure_threshold=settings.worker.breaker_failure_threshold,
            cooldown_s=settings.worker.breaker_cooldown_s,
        )
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.started_at = time.time()
        self.delivered_total = 0
        self.failed_over_total = 0
        self.in_flight = 0
        self._intake: asyncio.Queue[Held] = asyncio.Queue()
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stop_requested = asyncio.Event()
        self._circuit_wake = asyncio.Event()
        self._breaker_opened = asyncio.Event()
        self._stopping = False
        self._connection: AbstractRobustConnection | None = None
        self._publisher: ConfirmedPublisher | None = None
        self._sink: EventSink | None = None
        self._consumers: Consumers | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def own_prefetch_count(self) -> int:
        # One request slot can carry a whole batch, so a batching platform gets full requests.
        return max(self._concurrency, min(self._concurrency * self._max_batch, MAX_PREFETCH))

    @property
    def standby_prefetch_count(self) -> int:
        return self._worker_settings.standby_prefetch_count or self.own_prefetch_count

    @property
    def circuit(self) -> CircuitState:
        return self.breaker.state

    @property
    def concurrency(self) -> int:
        return self._concurrency

    @property
    def metrics_port(self) -> int:
        return self._metrics_port

    def request_stop(self) -> None:
        """Begin a graceful stop (SIGTERM): the caller's `run()` returns within `worker.grace_s`."""
        self._stop_requested.set()

    async def run(self) -> None:
        """Deliver until `request_stop()`; then hand back or finish what is held and return."""
        await self._open()
        try:
            await self._stop_requested.wait()
        finally:
            await self._shutdown()

    async def _open(self) -> None:
        self.metrics.serve(self._metrics_port)
        self._connection = await connect(
            self._settings.broker, name=f"relay-worker-{self.site} {self.worker_id}"
        )
        self._publisher = await ConfirmedPublisher.open(
            self._connection,
            confirm_timeout_s=self._settings.worker.confirm_timeout_s,
        )
        await declare(self._publisher.channel, self._topology)
        own_channel = await self._consume_channel(self.own_prefetch_count)
        standby_channel = await self._consume_channel(self.standby_prefetch_count)
        own = await self._queue(own_channel, self.site)
        standby = {
            other: await self._queue(standby_channel, other)
            for other in self._settings.site_names
            if other != self.site
        }
        self._consumers = Consumers.for_site(
            own=own, own_site=self.site, standby=standby, on_message=self._on_message
        )
        self._sink = EventSink(publisher=self._publisher, exchange=events_exchange(self._prefix))
        self._sink.start()
        beats = HeartbeatSender(
            connection=self._connection,
            exchange=heartbeat_exchange(self._prefix),
            interval_s=self._worker_settings.heartbeat_interval_s,
            worker=self,
        )
        self._tasks = [
            asyncio.create_task(self._runner(), name=f"runner-{i}") for i in range(self._concurrency)
        ]
        self._tasks.append(asyncio.create_task(self._supervise_circuit(), name="circuit"))
        self._tasks.append(asyncio.create_task(beats.run(), name="heartbeat"))
        freeze_startup_objects()
        await self._consumers.start()
        log.info(
            "worker started",
            site=self.site,
            concurrency=self._concurrency,
            max_batch=self._max_batch,
            prefetch_count=self.own_prefetch_count,
            standby_prefetch_count=self.standby_prefetch_count,
            worker=self.worker_id,
        )

    async def _consume_channel(self, prefetch_count: int) -> AbstractChannel:
        assert self._connection is not None
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=prefetch_count)
        return channel

    async def _queue(self, channel: AbstractChannel, site: str) -> AbstractQueue:
        name = site_queue(self._prefix, site)
        spec = next(s for s in self._topology.queues() if s.name == name)
        return await channel.declare_queue(name, durable=True, arguments=spec.arguments)

    async def _shutdown(self) -> None:
        deadline = time.monotonic() + self._worker_settings.grace_s - CLOSE_MARGIN_S
        self._stopping = True
        self._circuit_wake.set()
        log.info("worker stopping", site=self.site, in_flight=self.in_flight)
        if self._consumers is not None:
            await self._consumers.cancel()
        await self._hand_back_intake()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wait_idle(), timeout=max(0.0, deadline - time.monotonic()))
        if self._busy:
            # Sends still without an answer stay unacked: the broker redelivers them when we disconnect.
            log.warning("grace period over with sends in flight", busy=self._busy)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._hand_back_intake()  # what runners cancelled mid-linger put back
        if self._sink is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sink.close(), timeout=max(0.1, CLOSE_MARGIN_S))
        with contextlib.suppress(Exception):
            await self._platform.aclose()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.close(), timeout=CLOSE_MARGIN_S)
        log.info("worker stopped", site=self.site, delivered_total=self.delivered_total)

    async def _wait_idle(self) -> None:
        while self._busy or not self._intake.empty():
            await self._hand_back_intake()
            self._idle.clear()
            if self._busy:
                await self._idle.wait()
            else:
                await asyncio.sleep(0.01)

    # -- intake ----------------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage, queue_site: str) -> None:
        for held in await self._hold(message, queue_site):
            self._intake.put_nowait(held)

    async def _hold(self, message: AbstractIncomingMessage, queue_site: str) -> list[Held]:
        """Track a delivered message and its jobs; a body that is no job is dead-lettered at once."""
        state = DeliveryState.from_headers(message.headers, queue_site=queue_site)
        try:
            jobs = decode_jobs(message.body)
            malformed = None
        except EnvelopeError as exc:
            jobs = [_placeholder_job(message)]
            malformed = str(exc)[:200]
        carrier = Carrier(message=message, queue_site=queue_site, size=len(jobs), unsettled=len(jobs))
        held = [Held(carrier=carrier, job=job, state=state) for job in jobs]
        self.in_flight += len(held)
        self._in_flight_gauge.set(self.in_flight)
        if malformed is not None:
            await self._dead(
                held[0],
                reason=DeadReason.MALFORMED,
                detail=malformed,
                attempts=state.attempt,
                outcome=Outcome.REJECTED,
                status=Status.DEAD,
            )
            return []
        return held

    # -- delivery --------------------------------------------------------------------------------

    async def _runner(self) -> None:
        while True:
            batch = await take_batch(self._intake, max_batch=self._max_batch)
            self._busy += 1
            self._idle.clear()
            try:
                await self._deliver(batch, probe=False)
            except Exception:
                log.exception("delivery failed unexpectedly", site=self.site, jobs=len(batch))
            finally:
                for held in batch:
                    if not held.settled:
                        await self._nack(held)
                self._busy -= 1
                if not self._busy:
                    self._idle.set()

    async def _deliver(self, batch: Sequence[Held], *, probe: bool) -> None:
        # Hand-backs and expiries start at once (tasks); settlements after the send need no task of their own.
        settling: list[Awaitable[None]] = []
        to_send: list[Held] = []
        now = time.time()
        for held in batch:
            if _stale(held):
                self._forget(held)
            elif not probe and (self._stopping or not self.breaker.allows_traffic()):
                settling.append(asyncio.ensure_future(self._hand_back(held)))
            elif held.job.expired(now):
                settling.append(asyncio.ensure_future(self._expire(held)))
            else:
                to_send.append(held)
        if to_send:
            results, latency_ms = await self._send(to_send)
            accepted: list[Held] = []
            for held, result in zip(to_send, results, strict=True):
                if result.outcome is Outcome.ACCEPTED:
                    accepted.append(held)
                else:
                    settling.append(self._settle(held, result, latency_ms))
            if accepted:
                settling.append(self._settle_accepted(accepted, latency_ms))
        if len(settling) == 1:  # the common case: no task for gather to make
            await settling[0]
        elif settling:
            await asyncio.gather(*settling)

    async def _settle_accepted(self, batch: list[Held], latency_ms: float) -> None:
        """The common case in bulk: one confirmed event batch, then the acks."""
        assert self._sink is not None
        self._deliveries[Outcome.ACCEPTED].inc(len(batch))
        self._breaker_success()
        accepted = Result(Outcome.ACCEPTED, "")
        confirms = [
            self._sink.record(
                self._record(held, held.state.attempt + 1, accepted, latency_ms, Status.DELIVERED)
            )
            for held in batch
        ]
        outcomes = await asyncio.gather(*confirms, return_exceptions=True)
        for held, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                log.warning("event not confirmed; job goes back to its queue", message_id=held.job.id)
                await self._nack(held)
            else:
                self.delivered_total += 1
                await self._ack(held)

    async def _send(self, jobs: Sequence[Held]) -> tuple[list[Result], float]:
        started = time.perf_counter()
        try:
            results = await self._platform.send([held.job for held in jobs])
        except Exception as exc:
            # The adapter broke its promise not to raise: whether the request left is unknown.
            log.exception("platform adapter raised", site=self.site)
            results = [Result(Outcome.AMBIGUOUS, f"adapter error: {exc!r}"[:200])] * len(jobs)
        elapsed_s = time.perf_counter() - started
        self.metrics.latency.labels(site=self.site).observe(elapsed_s)
        if len(results) != len(jobs):
            log.error("platform answered a different number of results", sent=len(jobs), got=len(results))
            results = [Result(Outcome.AMBIGUOUS, "adapter returned a wrong number of results")] * len(jobs)
        return results, elapsed_s * 1000

    async def _settle(self, held: Held, result: Result, latency_ms: float) -> None:
        self._deliveries[result.outcome].inc()
        attempt = held.state.attempt + 1
        if result.outcome is Outcome.ACCEPTED:
            self._breaker_success()
            record = self._record(held, attempt, result, latency_ms, Status.DELIVERED)
            if await self._confirmed(held, self._sink_record(record)):
                self.delivered_total += 1
                await self._ack(held)
        elif result.outcome is Outcome.REJECTED:
            self._breaker_success()
            await self._dead(
                held,
                reason=DeadReason.REJECTED,
                detail=result.detail,
                attempts=attempt,
                outcome=Outcome.REJECTED,
                status=Status.REJECTED,
                latency_ms=latency_ms,
            )
        elif result.outcome is Outcome.EXPIRED:
            await self._expire(held)
        else:
            self._breaker_failure()
            await self._after_failure(held, result, latency_ms)

    async def _after_failure(self, held: Held, result: Result, latency_ms: float) -> None:
        if self.breaker.allows_traffic():
            # Requests sent together fail together (a black hole times them all out at once): wait a
            # moment for the others' outcomes, so a job whose failure opens the breaker a few ms later
            # goes straight to the next site instead of a delay queue of the failing one.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._breaker_opened.wait(), timeout=FAILURE_VERDICT_WAIT_S)
        step = after_failure(
            held.state,
            tried_site=self.site,
            topology=self._topology,
            attempts_per_site=self._worker_settings.attempts_per_site,
            max_attempts=self._worker_settings.max_attempts,
            site_failing=not self.breaker.allows_traffic(),
        )
        if isinstance(step, GiveUp):
            await self._dead(
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
        if await self._confirmed(held, self._republish(held, step), self._sink_record(record)):
            if step.switched_site:
                self.failed_over_total += 1
                self.metrics.failovers.labels(site=self.site, kind="republish").inc()
            if step.delayed:
                self.metrics.retries.labels(site=self.site).inc()
            await self._ack(held)

    async def _republish(self, held: Held, step: Retry) -> None:
        assert self._publisher is not None
        # Alone in its message, the body goes on untouched; out of a bundle, the job travels alone.
        carrier = held.carrier
        await self._publisher.publish(
            carrier.message.body if carrier.size == 1 else encode_job(held.job),
            exchange=step.exchange,
            routing_key=step.routing_key,
            message_id=held.job.id,
            headers=step.state.headers(),
        )

    async def _expire(self, held: Held) -> None:
        await self._dead(
            held,
            reason=DeadReason.EXPIRED,
            detail="validity ran out before delivery",
            attempts=held.state.attempt,
            outcome=Outcome.EXPIRED,
            status=Status.EXPIRED,
        )

    async def _dead(
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
        assert self._publisher is not None
        body = encode_dead(held.job, site=self.site, reason=reason, detail=detail, attempts=attempts)
        record = self._record(held, attempts, Result(outcome, detail), latency_ms, status)
        publish = self._publisher.publish(
            body, exchange=dead_exchange(self._prefix), routing_key="", message_id=held.job.id
        )
        if await self._confirmed(held, publish, self._sink_record(record)):
            self.metrics.dead_letters.labels(site=self.site, reason=reason.value).inc()
            log.info(
                "dead letter", message_id=held.job.id, reason=reason.value, detail=detail, site=self.site
            )
            await self._ack(held)

    def _record(
        self, held: Held, attempt: int, result: Result, latency_ms: float | None, status: Status | None
    ) -> AttemptRecord:
        return AttemptRecord(
            message_id=held.job.id,
            site=self.site,
            attempt=attempt,
            outcome=result.outcome,
            detail=result.detail,
            latency_ms=latency_ms,
            worker=self.worker_id,
            status=status,
            job=held.job,
        )

    async def _sink_record(self, record: AttemptRecord) -> None:
        assert self._sink is not None
        await self._sink.record(record)

    async def _confirmed(self, held: Held, *publishes: Awaitable[None]) -> bool:
        """Await the confirms a job's ack depends on; on failure hand the job back unacked."""
        try:
            await asyncio.gather(*publishes)
        except TransientError as exc:
            log.warning(
                "broker did not confirm; job goes back to its queue", message_id=held.job.id, error=str(exc)
            )
            await self._nack(held)
            return False
        return True

    # -- acks ------------------------------------------------------------------------------------

    def _release(self, held: Held) -> Carrier:
        held.settled = True
        self.in_flight -= 1
        self._in_flight_gauge.set(self.in_flight)
        carrier = held.carrier
        carrier.unsettled -= 1
        return carrier

    def _forget(self, held: Held) -> None:
        """Its channel is gone, and with it the whole message: the broker has put it back already."""
        self._release(held).lost = True

    async def _ack(self, held: Held) -> None:
        """The job's outcome is durable elsewhere."""
        if not held.settled:
            await self._settle_carrier(self._release(held))

    async def _nack(self, held: Held) -> None:
        """The job goes back to its queue unsent."""
        if not held.settled:
            carrier = self._release(held)
            carrier.handed_back.append(held.job)
            await self._settle_carrier(carrier)

    async def _settle_carrier(self, carrier: Carrier) -> None:
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
        assert self._publisher is not None
        jobs = carrier.handed_back
        try:
            await self._publisher.publish(
                encode_jobs(jobs),
                exchange=DEFAULT_EXCHANGE,
                routing_key=site_queue(self._prefix, carrier.queue_site),
                message_id=jobs[0].id,
                headers=carrier.message.headers,
            )
        except TransientError as exc:
            # Nacked whole instead: the jobs of the bundle that were settled may then come again.
            log.warning("hand-back of part of a bundle not confirmed", jobs=len(jobs), error=str(exc))
            return False
        return True

    async def _hand_back(self, held: Held) -> None:
        """Return an unsent job to its queue, once no consumer of ours can be handed it again."""
        if self._consumers is not None:
            await self._consumers.stopped.wait()
        if not self._stopping:
            self.failed_over_total += 1
            self.metrics.failovers.labels(site=self.site, kind="requeue").inc()
        await self._nack(held)

    async def _hand_back_intake(self) -> None:
        waiting: list[Held] = []
        while True:
            try:
                waiting.append(self._intake.get_nowait())
            except asyncio.QueueEmpty:
                break
        await asyncio.gather(*(self._hand_back(held) for held in waiting))

    # -- circuit breaker -------------------------------------------------------------------------

    def _breaker_success(self) -> None:
        if self.breaker.record_success() is Transition.CLOSED:
            log.info("circuit closed", site=self.site)
        self.metrics.set_circuit(self.breaker.state)

    def _breaker_failure(self) -> None:
        if self.breaker.record_failure() is Transition.OPENED:
            log.warning("circuit opened", site=self.site, cooldown_s=self.breaker.cooldown_s)
            self._breaker_opened.set()
            self._circuit_wake.set()
        self.metrics.set_circuit(self.breaker.state)

    async def _supervise_circuit(self) -> None:
        while not self._stopping:
            await self._circuit_wake.wait()
            self._circuit_wake.clear()
            try:
                await self._ride_out_open_circuit()
            except Exception:  # e.g. the connection dropped mid-cancel: look again shortly
                log.exception("circuit supervision failed; trying again", site=self.site)
                self._circuit_wake.set()
                await self._sleep_unless_stopping(SUPERVISION_RETRY_S)

    async def _ride_out_open_circuit(self) -> None:
        assert self._consumers is not None
        # Cancel first, then hand back: nacked before the cancel, jobs come straight back to us.
        while not self._stopping and self.breaker.state is CircuitState.OPEN:
            await self._consumers.cancel()
            await self._hand_back_intake()
            await self._sleep_unless_stopping(self.breaker.seconds_until_probe())
            if self._stopping or not self.breaker.begin_probe():
                continue
            self.metrics.set_circuit(self.breaker.state)
            probed = await self._probe()
            log.info("circuit probed", site=self.site, probed=probed, state=self.breaker.state.value)
        if not self._stopping and self.breaker.state is not CircuitState.OPEN and not self._consumers.running:
            # Closed by the probe, or half-open with nothing to probe with: the first real outcome then
            # decides, and one failure opens the breaker again.
            self._breaker_opened.clear()
            await self._consumers.start()

    async def _sleep_unless_stopping(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested.wait(), timeout=delay_s)
        if self._stop_requested.is_set():
            self._stopping = True

    async def _probe(self) -> bool:
        """Send ONE real job (own queue first, then the others); False when every queue is empty."""
        assert self._consumers is not None
        for site_queue_ in self._consumers.queues:
            try:
                message = await site_queue_.queue.get(no_ack=False, fail=False, timeout=PROBE_GET_TIMEOUT_S)
            except Exception as exc:
                log.warning("probe get failed", queue=site_queue_.queue.name, error=repr(exc))
                continue
            if message is None:
                continue
            held = await self._hold(message, site_queue_.site)
            if not held:
                continue
            probe, *rest = held
            self._busy += 1
            self._idle.clear()
            try:
                await self._deliver([probe], probe=True)
            finally:
                if not probe.settled:
                    await self._nack(probe)
                # The rest of a bundle: delivered by the runners, or handed back if the probe failed.
                for other in rest:
                    self._intake.put_nowait(other)
                self._busy -= 1
                if not self._busy:
                    self._idle.set()
            return True
        return False


def _stale(held: Held) -> bool:
    try:
        _ = held.carrier.message.channel
    except ChannelInvalidStateError:
        return True
    return False


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
