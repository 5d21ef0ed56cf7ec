"""The workers' heartbeats as `relay status` sees them: the last two of each worker, and what they say."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import AMQPError

from shared.envelope import decode_heartbeat
from shared.errors import EnvelopeError
from shared.model import CircuitState, Heartbeat
from shared.topology import heartbeat_exchange


@dataclass(slots=True, kw_only=True)
class WorkerView:
    worker: str
    circuit: str
    in_flight: int
    concurrency: int
    delivered_total: int
    failed_over_total: int
    age_s: float  # since its last heartbeat
    delivered_per_s: float | None  # from its last two heartbeats
    problem: str | None = None  # why its platform cannot take traffic


class HeartbeatCollector:
    """Keeps the last two heartbeats of every worker, from an exclusive queue bound to the fanout."""

    def __init__(self, *, max_age_s: float) -> None:
        self._max_age_s = max_age_s
        self._beats: dict[str, deque[Heartbeat]] = {}

    async def start(self, connection: AbstractRobustConnection, *, prefix: str) -> bool:
        """Listen, if the exchange exists (workers declare it); False when it does not exist yet."""
        channel = await connection.channel()
        try:
            # Passive: a status pointed at a wrong prefix must not leave an exchange behind.
            exchange = await channel.get_exchange(heartbeat_exchange(prefix), ensure=True)
        except AMQPError:
            return False  # the failed passive declare closed that channel
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(exchange)
        await queue.consume(self._on_message)
        return True

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            try:
                beat = decode_heartbeat(message.body)
            except EnvelopeError:
                return  # a beat from a newer or broken worker is not worth failing the status over
            self.add(beat)

    def add(self, beat: Heartbeat) -> None:
        self._beats.setdefault(beat.worker, deque(maxlen=2)).append(beat)

    def views(self, *, now_s: float) -> dict[str, list[WorkerView]]:
        by_site: dict[str, list[WorkerView]] = {}
        for beats in self._beats.values():
            last = beats[-1]
            age_s = max(now_s - last.at, 0.0)
            if age_s > self._max_age_s:
                continue  # a worker silent this long is gone
            rate = None
            if len(beats) == 2 and last.at > beats[0].at:
                rate = max(last.delivered_total - beats[0].delivered_total, 0) / (last.at - beats[0].at)
            by_site.setdefault(last.site, []).append(
                WorkerView(
                    worker=last.worker,
                    circuit=last.circuit,
                    in_flight=last.in_flight,
                    concurrency=last.concurrency,
                    delivered_total=last.delivered_total,
                    failed_over_total=last.failed_over_total,
                    age_s=round(age_s, 1),
                    delivered_per_s=None if rate is None else round(rate, 2),
                    problem=last.problem,
                )
            )
        for views in by_site.values():
            views.sort(key=lambda v: v.worker)
        return by_site


def circuit_summary(workers: list[WorkerView]) -> str:
    """`closed` when all are; else each state with how many workers are in it, worst first."""
    if not workers:
        return "no workers"
    states = [w.circuit for w in workers]
    if all(s == CircuitState.CLOSED for s in states):
        return CircuitState.CLOSED.value
    order = [CircuitState.OPEN.value, CircuitState.HALF_OPEN.value, CircuitState.CLOSED.value]
    parts = [f"{state} {states.count(state)}/{len(states)}" for state in order if state in states]
    problems = sorted({w.problem for w in workers if w.problem and w.circuit != CircuitState.CLOSED})
    return ", ".join(parts) + "".join(f": {problem}" for problem in problems)
