"""The relay on a three-node RabbitMQ cluster while nodes die: a whole `relay up` deployment (ingress,
a worker per site, simulated platforms) pointed at every node, a client that retries with the same
Idempotency-Key, and SIGKILLed nodes. Nothing answered 202 may be lost; a second copy at a platform only
ever follows an attempt marked as maybe sent before.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from pathlib import Path

import psutil
import pytest

from ops.harness.cluster_traffic import (
    RATE_PER_S,
    ReceiptClock,
    Submits,
    delivered,
    duplicates_at_platforms,
    marked_attempts,
    report,
    stream_through,
)
from ops.harness.deployment import Deployment, settings_of
from ops.harness.rabbit_cluster import RabbitCluster, RabbitNode

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.slow]


MOVE_WITHIN_S = 5.0


def store_of(up: Deployment) -> Path:
    return Path(settings_of(up.config).store.url.split("///", 1)[1])


def whereabouts(cluster: RabbitCluster, up: Deployment) -> str:
    """Where undelivered messages sit, for the failure message: the relay's queues and its spool files."""
    settings = settings_of(up.config)
    asker = next(node for node in cluster.nodes if node.alive)
    listing = cluster.ctl(asker, "list_queues", "name", "messages", "consumers", "--no-table-headers")
    queues = [line for line in listing.splitlines() if line.startswith(f"{settings.broker.prefix}.")]
    spools = {}
    for path in settings.ingress.spool_path.parent.glob(f"{settings.ingress.spool_path.stem}*.db"):
        with sqlite3.connect(path) as db:
            spools[path.name] = db.execute("SELECT count(*), sum(maybe_sent) FROM spool").fetchone()
    return f"queues (name, messages, consumers): {queues}; spool files (entries, marked): {spools}"


async def all_delivered_only_marked_twice(
    cluster: RabbitCluster,
    up: Deployment,
    submits: Submits,
    clock: ReceiptClock,
    fault_time: float,
    name: str,
) -> None:
    """Every submit got its 202, every accepted message reached a platform, and a second copy at a
    platform only ever followed an attempt marked as maybe sent before."""
    lost = await delivered(up, clock, submits)
    report(name, submits, clock, fault_time)
    assert not submits.gave_up, f"{len(submits.gave_up)} submits never got a 202"
    assert not lost, (
        f"{len(lost)} of {len(submits.accepted)} accepted messages never delivered; "
        f"{whereabouts(cluster, up)}"
    )
    assert duplicates_at_platforms(up.simulators) <= marked_attempts(store_of(up))


async def test_sigkill_of_the_site_queue_leader_loses_nothing_and_its_restart_rejoins(
    rabbit_cluster: RabbitCluster, cluster_deployment: Deployment
) -> None:
    prefix = settings_of(cluster_deployment.config).broker.prefix
    leader = rabbit_cluster.leader_of(f"{prefix}.site.a")
    submits, clock, fault_time = await stream_through(
        cluster_deployment,
        count=int(RATE_PER_S * 20),
        fault_at_s=4.0,
        fault=lambda: rabbit_cluster.kill(leader),
        heal_at_s=12.0,
        heal=lambda: rabbit_cluster.restart(leader),
    )
    await all_delivered_only_marked_twice(
        rabbit_cluster, cluster_deployment, submits, clock, fault_time, "leader SIGKILL"
    )
    assert len(set(submits.accepted.values())) == len(submits.accepted), "a retry got a second message id"
    # The restarted node is back in the cluster and holds a replica again.
    members = rabbit_cluster.ctl(leader, "list_queues", "name", "members", "--no-table-headers")
    line = next(row for row in members.splitlines() if row.startswith(f"{prefix}.site.a\t"))
    assert leader.name in line


async def test_loss_of_two_nodes_keeps_accepting_into_the_spool_and_forwards_when_a_majority_is_back(
    rabbit_cluster: RabbitCluster, cluster_deployment: Deployment
) -> None:
    down = rabbit_cluster.nodes[1:]

    def kill_two() -> None:
        for node in down:
            rabbit_cluster.kill(node)

    def restart_one() -> None:
        rabbit_cluster.restart(down[0])

    submits, clock, fault_time = await stream_through(
        cluster_deployment,
        count=int(RATE_PER_S * 15),
        fault_at_s=2.0,
        fault=kill_two,
        heal_at_s=14.0,
        heal=restart_one,
    )
    await all_delivered_only_marked_twice(
        rabbit_cluster, cluster_deployment, submits, clock, fault_time, "two of three nodes down"
    )


def node_of_worker(cluster: RabbitCluster, worker_pid: int) -> RabbitNode:
    """The node the worker with this pid holds an established AMQP connection to."""
    nodes = {node.amqp_port: node for node in cluster.nodes}
    for conn in psutil.Process(worker_pid).net_connections(kind="tcp"):
        if conn.raddr and conn.raddr.port in nodes and conn.status == psutil.CONN_ESTABLISHED:
            return nodes[conn.raddr.port]
    raise AssertionError(f"worker {worker_pid} holds no connection to a node of the cluster")


async def test_sigkill_of_a_workers_node_hands_its_unacked_jobs_on_and_marks_what_was_sent(
    rabbit_cluster: RabbitCluster, cluster_deployment: Deployment
) -> None:
    # A slow platform keeps jobs in flight, unacked, when the worker's node dies.
    cluster_deployment.simulators["a"].set_fault("slow", latency_ms=500)
    worker_pid = cluster_deployment.child_pids["worker-a-1"]
    node = node_of_worker(rabbit_cluster, worker_pid)
    moved_in_s: list[float] = []

    def kill_and_see_the_worker_move() -> None:
        rabbit_cluster.kill(node)
        killed_at = time.monotonic()
        while time.monotonic() - killed_at < MOVE_WITHIN_S:
            with contextlib.suppress(AssertionError):
                if node_of_worker(rabbit_cluster, worker_pid).alive:
                    moved_in_s.append(time.monotonic() - killed_at)
                    return
            time.sleep(0.2)

    submits, clock, fault_time = await stream_through(
        cluster_deployment,
        count=int(RATE_PER_S * 14),
        fault_at_s=4.0,
        fault=kill_and_see_the_worker_move,
        heal_at_s=12.0,
        heal=lambda: rabbit_cluster.restart(node),
    )
    cluster_deployment.simulators["a"].set_fault("none")
    assert moved_in_s, f"the worker was not on another node within {MOVE_WITHIN_S} s of its node's death"
    print(f"\nworker on another node {moved_in_s[0]:.2f} s after its node's SIGKILL")
    await all_delivered_only_marked_twice(
        rabbit_cluster, cluster_deployment, submits, clock, fault_time, "worker's node SIGKILL"
    )
