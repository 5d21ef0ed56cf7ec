"""Broker topology: names from pure functions (as dramatiq's) and one idempotent `declare()`.

<prefix>.jobs            direct exchange; routing key = site name
<prefix>.site.<site>     quorum queue of a site's jobs
<prefix>.delay.<site>.<n>s  quorum queue; its TTL dead-letters jobs back to <prefix>.jobs/<site>
<prefix>.events          fanout exchange + quorum queue: attempts and statuses for the store
<prefix>.dead            fanout exchange + quorum queue: dead letters for the store
<prefix>.reports         fanout exchange + quorum queue: platforms' delivery reports for the store (a queue
                         of their own: a recorder of an older version neither reads nor drops them)
<prefix>.parked          fanout exchange + quorum queue: whatever the other queues redelivered more than
                         `broker.delivery_limit` times; the recorder turns it into store rows
<prefix>.heartbeat       fanout exchange; workers' transient state for `relay status`
<prefix>.callbacks       direct exchange + quorum queue (key "callback"): callbacks to customers
<prefix>.callbacks.delay.<n>s  quorum queue; its TTL dead-letters callbacks back to <prefix>.callbacks
<prefix>.callbacks.parked  quorum queue (key "parked"): callbacks redelivered past the delivery limit;
                         the callback worker makes them dead callbacks

Every quorum queue names its delivery limit and its dead-letter target: RabbitMQ 4 gives a quorum queue
without them a limit of 20 deliveries and then drops the message. Every quorum queue asks for
`broker.quorum_group_size` replicas; RabbitMQ places at most one per running node, so a single node
holds the only one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aio_pika.abc import AbstractChannel, ExchangeType
from aiormq.exceptions import ChannelPreconditionFailed

from shared.broker_settings import DEFAULT_DELIVERY_LIMIT
from shared.errors import PermanentError
from shared.settings import Settings

OWN_SITE_PRIORITY = 10
STANDBY_PRIORITY = 1

_QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}
# A message moves to its dead-letter target only once that queue has confirmed it; the strategy needs
# reject-publish (with no length limit set it never rejects anything).
_AT_LEAST_ONCE: dict[str, Any] = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
# RabbitMQ 4 reads -1 as "no limit"; 3.x has no limit unless one is set, and reads -1 as none at all
# (measured on 3.10: the message is dropped after its first delivery).
_UNLIMITED_FROM_MAJOR = 4


class TopologyMismatch(PermanentError):
    """A queue exists with other arguments than this version declares; RabbitMQ cannot change them."""


def jobs_exchange(prefix: str) -> str:
    return f"{prefix}.jobs"


def site_queue(prefix: str, site: str) -> str:
    return f"{prefix}.site.{site}"


def bulk_queue(prefix: str, site: str) -> str:
    """A site's second jobs queue: the jobs of tenants with a backlog (`guard.bulk_after`), which the
    site's workers take after the other tenants' jobs, so one tenant's burst cannot hold up the rest."""
    return f"{prefix}.site.{site}.bulk"


def bulk_routing_key(site: str) -> str:
    return f"{site}.bulk"


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


def reports_exchange(prefix: str) -> str:
    return f"{prefix}.reports"


def reports_queue(prefix: str) -> str:
    return f"{prefix}.reports"


def parked_exchange(prefix: str) -> str:
    return f"{prefix}.parked"


def parked_queue(prefix: str) -> str:
    return f"{prefix}.parked"


def heartbeat_exchange(prefix: str) -> str:
    return f"{prefix}.heartbeat"


CALLBACK_KEY = "callback"
PARKED_CALLBACK_KEY = "parked"


def callbacks_exchange(prefix: str) -> str:
    return f"{prefix}.callbacks"


def callbacks_queue(prefix: str) -> str:
    return f"{prefix}.callbacks"


def callback_delay_queue(prefix: str, delay_s: int) -> str:
    return f"{prefix}.callbacks.delay.{delay_s}s"


def parked_callbacks_queue(prefix: str) -> str:
    return f"{prefix}.callbacks.parked"


def broker_major(version: str) -> int:
    """The major version of a RabbitMQ version string (``"3.10.8"`` -> 3); 3 when unreadable."""
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 3


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
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT
    quorum_group_size: int = 3
    callback_delays_s: tuple[int, ...] = ()  # the distinct delays of callbacks' retries

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
            (reports_exchange(p), ExchangeType.FANOUT),
            (parked_exchange(p), ExchangeType.FANOUT),
            (heartbeat_exchange(p), ExchangeType.FANOUT),
            (callbacks_exchange(p), ExchangeType.DIRECT),
        ]

    def queues(self, *, broker_major: int = 3) -> list[QueueSpec]:
        """Every queue; `broker_major` only changes how the parked queue says "no delivery limit"."""
        p = self.prefix
        quorum = {**_QUORUM, "x-quorum-initial-group-size": self.quorum_group_size}
        limited = {**quorum, "x-delivery-limit": self.delivery_limit, **_AT_LEAST_ONCE}
        parks = {**limited, "x-dead-letter-exchange": parked_exchange(p)}
        specs = [
            QueueSpec(name=events_queue(p), arguments=parks, exchange=events_exchange(p)),
            QueueSpec(name=dead_queue(p), arguments=parks, exchange=dead_exchange(p)),
            QueueSpec(name=reports_queue(p), arguments=parks, exchange=reports_exchange(p)),
            # The last stop: nothing to dead-letter to (a queue dead-lettering to itself drops the
            # message as a cycle), so no delivery limit at all; the recorder never requeues from it.
            QueueSpec(
                name=parked_queue(p),
                arguments={**quorum, "x-delivery-limit": -1}
                if broker_major >= _UNLIMITED_FROM_MAJOR
                else quorum,
                exchange=parked_exchange(p),
            ),
        ]
        specs += self._callback_queues(quorum, limited, broker_major)
        for site in self.sites:
            specs.append(
                QueueSpec(
                    name=site_queue(p, site), arguments=parks, exchange=jobs_exchange(p), routing_key=site
                )
            )
            specs.append(
                QueueSpec(
                    name=bulk_queue(p, site),
                    arguments=parks,
                    exchange=jobs_exchange(p),
                    routing_key=bulk_routing_key(site),
                )
            )
            for delay_s in self.retry_delays_s:
                specs.append(
                    QueueSpec(
                        name=delay_queue(p, site, delay_s),
                        arguments={
                            **limited,
                            "x-message-ttl": delay_s * 1000,
                            # Expired jobs go back to their site's jobs queue.
                            "x-dead-letter-exchange": jobs_exchange(p),
                            "x-dead-letter-routing-key": site,
                        },
                    )
                )
        return specs

    def _callback_queues(
        self, quorum: dict[str, Any], limited: dict[str, Any], broker_major: int
    ) -> list[QueueSpec]:
        p = self.prefix
        exchange = callbacks_exchange(p)
        back = {"x-dead-letter-exchange": exchange, "x-dead-letter-routing-key": CALLBACK_KEY}
        parks = {**back, "x-dead-letter-routing-key": PARKED_CALLBACK_KEY}
        specs = [
            QueueSpec(
                name=callbacks_queue(p),
                arguments={**limited, **parks},
                exchange=exchange,
                routing_key=CALLBACK_KEY,
            ),
            QueueSpec(
                name=parked_callbacks_queue(p),
                arguments={**quorum, "x-delivery-limit": -1}
                if broker_major >= _UNLIMITED_FROM_MAJOR
                else quorum,
                exchange=exchange,
                routing_key=PARKED_CALLBACK_KEY,
            ),
        ]
        for delay_s in self.callback_delays_s:
            specs.append(
                QueueSpec(
                    name=callback_delay_queue(p, delay_s),
                    arguments={**limited, "x-message-ttl": delay_s * 1000, **back},
                )
            )
        return specs


async def declare(channel: AbstractChannel, topology: Topology) -> None:
    """Declare every exchange, queue and binding; safe to run from every process at every start.

    Raises `TopologyMismatch` when a queue exists with other arguments (declared by an earlier version,
    or with another `broker.delivery_limit`); the channel is closed by the broker then.
    """
    underlay = await channel.get_underlay_channel()
    version = underlay.connection.server_properties.get("version", "")
    major = broker_major(version.decode() if isinstance(version, bytes) else str(version))
    exchanges = {}
    for name, kind in topology.exchanges():
        exchanges[name] = await channel.declare_exchange(name, kind, durable=True)
    for spec in topology.queues(broker_major=major):
        try:
            queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        except ChannelPreconditionFailed as exc:
            raise TopologyMismatch(
                f"queue {spec.name!r} exists with other arguments than this relay declares ({exc.args[0]}); "
                "RabbitMQ cannot change them: let the relay empty it, delete it "
                f"(rabbitmqctl delete_queue {spec.name}) and start again (README: Upgrading)"
            ) from exc
        if spec.exchange is not None:
            await queue.bind(exchanges[spec.exchange], routing_key=spec.routing_key)


def topology_from(settings: Settings) -> Topology:
    return Topology(
        prefix=settings.broker.prefix,
        sites=tuple(settings.site_names),
        retry_delays_s=tuple(settings.worker.retry_delays_s),
        delivery_limit=settings.broker.delivery_limit,
        quorum_group_size=settings.broker.quorum_group_size,
        callback_delays_s=tuple(sorted(set(settings.callbacks.retry_delays_s))),
    )
