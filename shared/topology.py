"""Broker topology: names from pure functions (as dramatiq's) and one idempotent `declare()`.

<prefix>.jobs            direct exchange; routing key = site name
<prefix>.site.<site>     quorum queue of a site's jobs
<prefix>.delay.<site>.<n>s  quorum queue; its TTL dead-letters jobs back to <prefix>.jobs/<site>
<prefix>.events          fanout exchange + quorum queue: attempts and statuses for the store
<prefix>.dead            fanout exchange + quorum queue: dead letters for the store
<prefix>.heartbeat       fanout exchange; workers' transient state for `relay status`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractChannel, ExchangeType

from shared.settings import Settings

OWN_SITE_PRIORITY = 10
STANDBY_PRIORITY = 1

_QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}


def jobs_exchange(prefix: str) -> str:
    return f"{prefix}.jobs"


def site_queue(prefix: str, site: str) -> str:
    return f"{prefix}.site.{site}"


def delay_queue(prefix: str, site: str, delay_s: int) -> str:
    return f"{prefix}.delay.{site}.{delay_s}s"


def events_exchange(prefix: str) -> str:
    return f"{prefix}.events"


def events_queue(prefix: str) -> str:
    return f"{prefix}.events"


def dead_exchange(prefix: str) -> str:
    return f"{prefix}.dead"


def dead_queue(prefix: str) -> str:
    return f"{prefix}.dead"


def heartbeat_exchange(prefix: str) -> str:
    return f"{prefix}.heartbeat"


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    exchange: str | None = None
    routing_key: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Topology:
    prefix: str
    sites: tuple[str, ...]
    retry_delays_s: tuple[int, ...]

    def delay_queue_for(self, site: str, attempt: int) -> str:
        """Delay queue of the n-th retry (1-based): the tiers in order, then the last one."""
        delay_s = self.retry_delays_s[min(attempt, len(self.retry_delays_s)) - 1]
        return delay_queue(self.prefix, site, delay_s)

    def exchanges(self) -> list[tuple[str, ExchangeType]]:
        p = self.prefix
        return [
            (jobs_exchange(p), ExchangeType.DIRECT),
            (events_exchange(p), ExchangeType.FANOUT),
            (dead_exchange(p), ExchangeType.FANOUT),
            (heartbeat_exchange(p), ExchangeType.FANOUT),
        ]

    def queues(self) -> list[QueueSpec]:
        p = self.prefix
        specs = [
            QueueSpec(name=events_queue(p), arguments=_QUORUM, exchange=events_exchange(p)),
            QueueSpec(name=dead_queue(p), arguments=_QUORUM, exchange=dead_exchange(p)),
        ]
        for site in self.sites:
            specs.append(
                QueueSpec(
                    name=site_queue(p, site), arguments=_QUORUM, exchange=jobs_exchange(p), routing_key=site
                )
            )
            for delay_s in self.retry_delays_s:
                specs.append(
                    QueueSpec(
                        name=delay_queue(p, site, delay_s),
                        arguments={
                            **_QUORUM,
                            "x-message-ttl": delay_s * 1000,
                            "x-dead-letter-exchange": jobs_exchange(p),
                            "x-dead-letter-routing-key": site,
                            # Expired jobs move only once the jobs queue has confirmed them.
                            "x-dead-letter-strategy": "at-least-once",
                            "x-overflow": "reject-publish",
                        },
                    )
                )
        return specs


async def declare(channel: AbstractChannel, topology: Topology) -> None:
    """Declare every exchange, queue and binding; safe to run from every process at every start."""
    exchanges = {}
    for name, kind in topology.exchanges():
        exchanges[name] = await channel.declare_exchange(name, kind, durable=True)
    for spec in topology.queues():
        queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        if spec.exchange is not None:
            await queue.bind(exchanges[spec.exchange], routing_key=spec.routing_key)


def topology_from(settings: Settings) -> Topology:
    return Topology(
        prefix=settings.broker.prefix,
        sites=tuple(settings.site_names),
        retry_delays_s=tuple(settings.worker.retry_delays_s),
    )
