"""`relay drill --fault broker-node` against a `relay up` deployment on a real three-node RabbitMQ cluster:
the drill finds the leader of the site's queue and its pid through the management API, SIGKILLs it, starts
it again when the fault window ends, and gives the same verdict as for any fault: nothing lost."""

from __future__ import annotations

import pytest

from ops.harness.deployment import Deployment, settings_of
from ops.harness.rabbit_cluster import RabbitCluster
from tests.integration.test_drill import run_drill

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.slow]


def test_drill_kills_the_site_queues_leader_restarts_it_and_loses_nothing(
    rabbit_cluster: RabbitCluster, cluster_deployment: Deployment
) -> None:
    prefix = settings_of(cluster_deployment.config).broker.prefix
    leader = rabbit_cluster.leader_of(f"{prefix}.site.a")
    pid_before = leader.pid
    code, verdict, stderr = run_drill(
        cluster_deployment,
        "--site",
        "a",
        "--fault",
        "broker-node",
        "--messages",
        "600",
        "--rate",
        "60",
        "--settle-timeout-s",
        "90",
        timeout_s=300,
    )
    print(f"\nbroker-node drill: {verdict}")
    assert verdict["fault"] == "broker-node", verdict
    assert verdict["accepted"] > 0, verdict
    assert verdict["lost"] == 0, verdict
    assert code == 0, (verdict, stderr[-2000:])
    assert verdict["delivered"] + sum(verdict["dead_lettered"].values()) == verdict["accepted"]
    # The drill killed that very node and started it again: it runs under a new pid, back in the cluster.
    assert leader.alive and leader.pid != pid_before, leader
    notes = " | ".join(verdict["run"]["fault_notes"])
    assert f"SIGKILLed broker node {leader.name} (pid {pid_before})" in notes
    assert f"broker node {leader.name} runs again" in notes
    members = rabbit_cluster.ctl(leader, "list_queues", "name", "members", "--no-table-headers")
    line = next(row for row in members.splitlines() if row.startswith(f"{prefix}.site.a\t"))
    assert leader.name in line
