"""The broker cluster in `relay status`: each node up or down, the relay's quorum queues it leads, and
each queue's replicas, read from RabbitMQ's management API.

A replica "in sync" is a member of the queue's Raft group whose node is running (the API's `online`):
RabbitMQ 3.10's API tells no more than that. A queue with fewer of them than `broker.quorum_group_size`
asks for (capped by the number of nodes in the cluster) gets a warning: one more node lost and it may have
no majority, so no publisher confirm and no delivery.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from ops.broker_management import Management, ManagementUnreachable
from shared.broker_settings import BrokerSettings
from shared.errors import NotFound


@dataclass(slots=True, kw_only=True)
class NodeView:
    name: str
    running: bool
    leads: list[str] = field(default_factory=list)  # the relay's queues whose leader it is


@dataclass(slots=True, kw_only=True)
class QueueReplicas:
    name: str
    leader: str | None
    members: list[str]
    in_sync: list[str]  # members whose node is running
    wanted: int  # broker.quorum_group_size, capped by the cluster's size

    @property
    def short(self) -> bool:
        return len(self.in_sync) < self.wanted


@dataclass(slots=True, kw_only=True)
class ClusterView:
    reachable: bool
    source: str | None  # the management URL that answered
    error: str | None = None
    nodes: list[NodeView] = field(default_factory=list)
    queues: list[QueueReplicas] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def cluster_view(
    nodes: list[dict[str, Any]],
    queues: list[dict[str, Any]],
    *,
    group_size: int,
    source: str | None,
) -> ClusterView:
    """The view of what `/api/nodes` and `/api/queues/<vhost>` answered (only the relay's queues)."""
    views = [NodeView(name=str(n.get("name")), running=bool(n.get("running"))) for n in nodes]
    by_name = {view.name: view for view in views}
    wanted = min(group_size, len(views)) if views else group_size
    replicas = []
    for queue in sorted(queues, key=lambda q: str(q.get("name"))):
        if queue.get("type") != "quorum":
            continue  # the relay declares only quorum queues; a classic one has no replicas to count
        leader = queue.get("leader")
        replica = QueueReplicas(
            name=str(queue.get("name")),
            leader=str(leader) if leader else None,
            members=_names(queue.get("members")),
            in_sync=_names(queue.get("online")),
            wanted=wanted,
        )
        replicas.append(replica)
        if replica.leader in by_name:
            by_name[replica.leader].leads.append(replica.name)
    warnings = [f"node {view.name} is down" for view in views if not view.running]
    warnings += [
        f"queue {q.name} has {len(q.in_sync)} of {q.wanted} replicas in sync "
        f"(broker.quorum_group_size {group_size}, {len(views)} nodes)"
        for q in replicas
        if q.short
    ]
    return ClusterView(reachable=True, source=source, nodes=views, queues=replicas, warnings=warnings)


async def read_cluster(settings: BrokerSettings, *, client: httpx.AsyncClient) -> ClusterView:
    """The cluster as the management API tells it; unreachable is a view too, never an error."""
    api = Management(settings=settings, client=client)
    try:
        nodes = await api.nodes()
        queues = await api.queues(settings.prefix)
    except (ManagementUnreachable, NotFound) as exc:
        return ClusterView(reachable=False, source=None, error=str(exc))
    return cluster_view(nodes, queues, group_size=settings.quorum_group_size, source=api.answered_by)


def _short_node(name: str | None) -> str:
    return "-" if name is None else name


def cluster_lines(view: ClusterView | None) -> list[str]:
    """The cluster as plain lines."""
    if view is None:
        return []
    if not view.reachable:
        return [f"broker nodes: {view.error}"]
    lines = [f"broker nodes ({len(view.nodes)}, from {view.source}):"]
    for node in view.nodes:
        leads = ", ".join(node.leads) if node.leads else "no relay queue"
        lines.append(f"  node {node.name} {'up' if node.running else 'DOWN'}  leads {leads}")
    for queue in view.queues:
        lines.append(
            f"  queue {queue.name} leader {_short_node(queue.leader)} replicas in sync "
            f"{len(queue.in_sync)}/{queue.wanted} ({', '.join(queue.in_sync) or 'none'})"
        )
    lines.extend(f"  ! {warning}" for warning in view.warnings)
    return lines


def cluster_rich(view: ClusterView | None) -> list[Any]:
    """The cluster as Rich renderables: a table of nodes, one of queues, then the warnings."""
    from rich.table import Table
    from rich.text import Text

    if view is None:
        return []
    if not view.reachable:
        return [Text(f"broker nodes: {view.error}", style="yellow")]
    nodes = Table(title=f"broker nodes (from {view.source})", expand=False)
    for name in ("node", "state", "leads"):
        nodes.add_column(name)
    for node in view.nodes:
        state = Text("up", style="green") if node.running else Text("DOWN", style="red")
        nodes.add_row(node.name, state, "\n".join(node.leads) or "-")
    queues = Table(title="quorum queues", expand=False)
    for name in ("queue", "leader", "in sync", "replicas"):
        queues.add_column(name, justify="right" if name == "in sync" else "left")
    for queue in view.queues:
        count = Text(f"{len(queue.in_sync)}/{queue.wanted}", style="red" if queue.short else "green")
        queues.add_row(queue.name, _short_node(queue.leader), count, ", ".join(queue.in_sync))
    return [nodes, queues, *(Text(f"! {warning}", style="red") for warning in view.warnings)]
