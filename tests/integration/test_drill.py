"""`relay drill` against a real `relay up` deployment: every fault once, nothing lost; and a deployment
that does lose messages within the drill's bound, which the drill must report with exit code 1."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.harness.deployment import Deployment, relay_up
from ops.harness.processes import RELAY, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DRILL_MESSAGES = 240
DRILL_RATE = 80


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, broker_url: str) -> Iterator[Deployment]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    with relay_up(tmp_path_factory.mktemp("drill"), broker_url=broker_url, prefix=prefix) as up:
        yield up


def run_drill(up: Deployment, *args: str, timeout_s: float = 120) -> tuple[int, dict[str, Any], str]:
    completed = subprocess.run(
        [*RELAY, "--config", str(up.config), "drill", "--json", "--run-dir", str(up.run_dir), *args],
        capture_output=True,
        timeout=timeout_s,
        check=False,
    )
    stdout = completed.stdout.decode()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, (
        f"drill printed no JSON (exit {completed.returncode}): {stdout}\n{completed.stderr.decode()}"
    )
    return completed.returncode, json.loads(lines[-1]), completed.stderr.decode()


@pytest.mark.parametrize("fault", ["down", "blackhole", "error", "kill-worker"])
def test_drill_loses_nothing_under_each_fault(deployment: Deployment, fault: str) -> None:
    code, verdict, stderr = run_drill(
        deployment,
        "--site",
        "a",
        "--fault",
        fault,
        "--messages",
        str(DRILL_MESSAGES),
        "--rate",
        str(DRILL_RATE),
        "--settle-timeout-s",
        "60",
    )
    assert verdict["accepted"] > 0, verdict
    assert verdict["lost"] == 0, verdict
    assert code == 0, (verdict, stderr[-2000:])
    assert verdict["delivered"] + sum(verdict["dead_lettered"].values()) == verdict["accepted"]
    # The other site took over: it delivered more than its round-robin half.
    assert verdict["delivered_per_site"]["b"] > verdict["accepted"] // 2, verdict
    assert verdict["failover_gap_s"] is not None and verdict["failover_gap_s"] < 30, verdict
    assert verdict["recovery_s"] is not None, verdict


def test_drill_reports_messages_a_frozen_worker_holds_as_lost_with_exit_1(deployment: Deployment) -> None:
    # Site b's worker is frozen: it keeps the jobs the broker already gave it and sends none. Within the
    # drill's short bound those messages arrive nowhere, and the drill must say so.
    frozen = deployment.child_pids["worker-b-1"]
    os.kill(frozen, signal.SIGSTOP)
    try:
        code, verdict, _ = run_drill(
            deployment,
            "--site",
            "a",
            "--fault",
            "down",
            "--messages",
            "90",
            "--rate",
            "60",
            "--settle-timeout-s",
            "4",
        )
    finally:
        os.kill(frozen, signal.SIGCONT)
    assert verdict["lost"] > 0, verdict
    assert verdict["unsettled"] > 0, verdict
    assert len(verdict["lost_ids"]) == min(verdict["lost"], 20)
    assert code == 1


def test_drill_without_a_fault_drills_down_and_says_when_it_sends_slower_than_asked(
    deployment: Deployment,
) -> None:
    # No --config: the drill reads the deployment's from relay up's run file. No single client on this
    # machine sends 10,000 submits a second: the drill must say it fell short.
    args = ["drill", "--run-dir", str(deployment.run_dir), "--messages", "300", "--rate", "10000"]
    completed = subprocess.run(
        [*RELAY, *args, "--settle-timeout-s", "60"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    output = completed.stdout.decode()
    assert completed.returncode == 0, output + completed.stderr.decode()
    assert "Drill: down at site a" in output
    assert "short of the 10000/s asked" in output
    assert "PASSED" in output


def test_allowed_real_platform_counts_delivered_statuses_it_cannot_observe(deployment: Deployment) -> None:
    # The same deployment, with only site a's simulator named: the drill runs only with
    # --allow-real-platforms and trusts the store's `delivered` for what site b took.
    args = ["--config", str(deployment.config), "drill", "--json", "--run-dir", str(deployment.run_dir)]
    args += ["--simulator", f"a={deployment.simulators['a'].admin_url}", "--fault", "down"]
    args += ["--messages", "60", "--rate", "60", "--settle-timeout-s", "60"]
    refused = subprocess.run([*RELAY, *args], capture_output=True, timeout=60, check=False)
    assert refused.returncode == 2
    assert "site b has no simulator" in json.loads(refused.stdout.decode().splitlines()[-1])["refused"]
    completed = subprocess.run(
        [*RELAY, *args, "--allow-real-platforms"], capture_output=True, timeout=120, check=False
    )
    verdict = json.loads(completed.stdout.decode().splitlines()[-1])
    assert completed.returncode == 0, verdict
    assert verdict["lost"] == 0
    assert list(verdict["delivered_per_site"]) == ["a"]
    assert verdict["dead_lettered"].get("delivered-unobserved", 0) > 0
    assert verdict["delivered"] + verdict["dead_lettered"]["delivered-unobserved"] == verdict["accepted"]


def test_drill_refuses_platforms_that_are_not_simulators(tmp_path: Path) -> None:
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[sites.a]\nurl = "http://127.0.0.1:{free_port()}/v1.0/message"\n'
        '[sites.b]\nurl = "https://platform.example.com/v1.0/message"\n'
    )
    silent_admin = f"a=http://127.0.0.1:{free_port()}"
    args = ["--config", str(config), "drill", "--json", "--run-dir", str(tmp_path)]
    completed = subprocess.run(
        [*RELAY, *args, "--simulator", silent_admin],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 2
    answer = json.loads(completed.stdout.decode().splitlines()[-1])
    assert "not simulators" in answer["refused"]
    assert "site a: GET" in answer["refused"]  # its simulator does not answer
    assert "site b has no simulator" in answer["refused"]
