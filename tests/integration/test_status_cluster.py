"""`relay status` against a real three-node RabbitMQ cluster: each node, the relay's queues it leads and
the replicas of each queue, from the management API of whichever node answers; a killed node shows as
down and every queue it held a replica of is warned about, in the plain output and in `--json`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ops.harness.cleanup import delete_broker_names
from ops.harness.rabbit_cluster import RabbitCluster
from shared.broker import connect
from shared.settings import Settings
from shared.topology import declare, site_queue, topology_from
from tests.helpers import SITES
from tests.integration.ops_support import relay_env, run_relay

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.slow]

SEEN_DOWN_WITHIN_S = 30.0


@pytest.fixture
async def relay_on_cluster(rabbit_cluster: RabbitCluster, store_url: str) -> AsyncIterator[dict[str, str]]:
    """The relay's topology declared on the cluster; the environment of a `relay status` of it."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(
        broker={"url": rabbit_cluster.urls, "prefix": prefix, "quorum_group_size": 3},  # type: ignore[arg-type]
        sites=SITES,  # type: ignore[arg-type]
    )
    connection = await connect(settings.broker)
    try:
        await declare(await connection.channel(), topology_from(settings))
    finally:
        await connection.close()
    env = relay_env(broker_url=json.dumps(rabbit_cluster.urls), prefix=prefix, store_url=store_url)
    env["RELAY_BROKER__MANAGEMENT_URL"] = json.dumps(rabbit_cluster.management_urls)
    try:
        yield env
    finally:
        rabbit_cluster.revive()
        await delete_broker_names(rabbit_cluster.urls[0], settings)


def status_json(env: dict[str, str]) -> dict[str, Any]:
    done = run_relay(["status", "--json"], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    cluster: dict[str, Any] = json.loads(done.stdout)["cluster"]
    assert cluster["reachable"], cluster
    return cluster


def status_text(env: dict[str, str]) -> str:
    done = run_relay(["status"], env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_status_shows_nodes_leaders_and_replicas_and_warns_when_a_node_dies(
    rabbit_cluster: RabbitCluster, relay_on_cluster: dict[str, str]
) -> None:
    env = relay_on_cluster
    prefix = env["RELAY_BROKER__PREFIX"]
    names = {node.name for node in rabbit_cluster.nodes}

    cluster = status_json(env)
    assert {n["name"]: n["running"] for n in cluster["nodes"]} == dict.fromkeys(names, True)
    queues = {q["name"]: q for q in cluster["queues"]}
    assert {site_queue(prefix, site) for site in SITES} <= set(queues)
    for queue in queues.values():
        assert sorted(queue["in_sync"]) == sorted(names) and queue["wanted"] == 3, queue
        assert queue["leader"] in names
    leads = {n["name"]: set(n["leads"]) for n in cluster["nodes"]}
    assert set().union(*leads.values()) == set(queues)
    for name, queue in queues.items():
        assert name in leads[queue["leader"]]
    assert cluster["warnings"] == []
    text = status_text(env)
    for node in rabbit_cluster.nodes:
        assert f"node {node.name} up" in text
    site_a = site_queue(prefix, "a")
    assert f"queue {site_a} leader {queues[site_a]['leader']} replicas in sync 3/3" in text

    leader = rabbit_cluster.leader_of(site_a)
    rabbit_cluster.kill(leader)
    deadline = time.monotonic() + SEEN_DOWN_WITHIN_S
    while True:
        cluster = status_json(env)
        running = {n["name"]: n["running"] for n in cluster["nodes"]}
        new_leader = next(q["leader"] for q in cluster["queues"] if q["name"] == site_a)
        if not running[leader.name] and new_leader != leader.name:
            break
        assert time.monotonic() < deadline, f"{leader.name} not seen down: {cluster}"
        await asyncio.sleep(1.0)
    assert cluster["source"] != leader.management_url  # its own API died with it
    assert sum(running.values()) == 2
    assert f"node {leader.name} is down" in cluster["warnings"]
    for queue in cluster["queues"]:
        assert len(queue["in_sync"]) == 2 and leader.name not in queue["in_sync"], queue
        assert f"queue {queue['name']} has 2 of 3 replicas in sync" in " ".join(cluster["warnings"])
    text = status_text(env)
    assert f"node {leader.name} DOWN  leads no relay queue" in text
    assert f"! queue {site_a} has 2 of 3 replicas in sync (broker.quorum_group_size 3, 3 nodes)" in text
    assert f"queue {site_a} leader {new_leader} replicas in sync 2/3" in text
