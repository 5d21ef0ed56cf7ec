"""What `relay status` reports: one snapshot of every site, the ingress, the broker's nodes and the dead
letters."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ops.status_cluster import ClusterView
from ops.status_heartbeats import WorkerView

UNKNOWN = "unknown"


@dataclass(slots=True, kw_only=True)
class SiteView:
    name: str
    queue: str
    ready: int | None  # None: the queue could not be read
    consumers: int | None
    unacked: int  # held by this site's workers (their heartbeats' in_flight)
    delay_queues: dict[str, int | None]
    circuit: str
    workers: list[WorkerView] = field(default_factory=list)
    delivered_per_s: float | None = None
    rate_source: str | None = None  # "heartbeats" or "store"


@dataclass(slots=True, kw_only=True)
class Snapshot:
    at: str
    prefix: str
    broker: str  # "ok" | "down"
    broker_error: str | None
    store: str
    store_error: str | None
    ingress: dict[str, Any]
    sites: list[SiteView]
    dead_letters: dict[str, Any]
    cluster: ClusterView | None = None  # the broker's nodes and replicas (its management API)
    # Delivery reports kept that name no message the store knew (README: Delivery reports).
    reports_unmatched: int | str = "?"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
