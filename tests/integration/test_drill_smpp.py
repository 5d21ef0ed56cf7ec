"""`relay up` with an smpp site runs a simulated SMSC for it, and `relay drill` faults that SMSC and finds
nothing lost: site a speaks SMPP to `relay smsc-sim`, site b http-json to `relay platform-sim`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from ops.harness.deployment import Deployment, relay_up
from ops.harness.processes import free_port
from tests.integration.test_drill import run_drill

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, broker_url: str) -> Iterator[Deployment]:
    sites = {
        "a": {
            "platform": "smpp",
            "host": "127.0.0.1",
            "port": free_port(),
            "system_id": "relay",
            "password": "secret",
            "timeout_s": 1.0,
        },
        "b": {"url": f"http://127.0.0.1:{free_port()}/v1.0/message", "timeout_s": 1.0},
    }
    prefix = f"t{uuid.uuid4().hex[:10]}"
    with relay_up(
        tmp_path_factory.mktemp("drill-smpp"), broker_url=broker_url, prefix=prefix, sites=sites
    ) as up:
        yield up


def test_relay_up_runs_a_simulated_smsc_for_the_smpp_site(deployment: Deployment) -> None:
    assert {"smsc-sim-a", "platform-sim-b", "worker-a-1", "worker-b-1"} <= set(deployment.child_pids)
    assert "Site a:    simulated SMSC" in deployment.log.read_text()
    # The run file names its admin API, which counts SMPP binds beside what every simulator counts.
    assert "binds" in deployment.simulators["a"].stats()
    assert "binds" not in deployment.simulators["b"].stats()


@pytest.mark.parametrize("fault", ["down", "blackhole", "error"])
def test_drill_faults_the_smsc_and_loses_nothing(deployment: Deployment, fault: str) -> None:
    code, verdict, stderr = run_drill(
        deployment,
        "--site",
        "a",
        "--fault",
        fault,
        "--messages",
        "240",
        "--rate",
        "80",
        "--settle-timeout-s",
        "60",
    )
    assert verdict["accepted"] > 0 and verdict["lost"] == 0, verdict
    assert code == 0, (verdict, stderr[-2000:])
    # The SMSC took part before and after the fault; the http-json site took over during it.
    assert verdict["delivered_per_site"]["a"] > 0, verdict
    assert verdict["delivered_per_site"]["b"] > verdict["accepted"] // 2, verdict
    assert verdict["failover_gap_s"] is not None and verdict["failover_gap_s"] < 30, verdict
