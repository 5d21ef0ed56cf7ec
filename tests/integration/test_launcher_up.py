"""`relay up` as a user runs it: a whole deployment on free ports, messages through it to `delivered`
(the simulators' delivery reports) and a customer's callback, a clean stop."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from ops.drill_traffic import submit_body
from ops.harness.deployment import Deployment, relay_up
from ops.harness.processes import RELAY
from ops.harness.simulators import SimulatorAdmin
from ops.run_dir import RUN_FILE
from tests.integration.callback_endpoint import Endpoint, serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _worker_pids(launcher_pid: int, site: str) -> list[int]:
    pids = []
    for child in psutil.Process(launcher_pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            command = child.cmdline()
            if "worker" in command and command[command.index("--site") + 1 :][:1] == [site]:
                pids.append(child.pid)
    return pids


def _received_by(simulators: dict[str, SimulatorAdmin], message_id: str) -> str | None:
    return next((site for site, sim in simulators.items() if message_id in sim.references()), None)


def _view_when(up: Deployment, message_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    view: dict[str, Any] = {}
    while view.get("status") != status and time.monotonic() < deadline:
        answer = httpx.get(
            f"{up.api_url}/v1/messages/{message_id}",
            headers={"Authorization": f"Bearer {up.key}"},
            timeout=10,
        )
        view = answer.json()
        time.sleep(0.2)
    assert view.get("status") == status, view
    return view


def test_relay_up_serves_a_message_end_to_end_and_stops_every_child(
    tmp_path: Path, broker_url: str, prefix: str
) -> None:
    with relay_up(tmp_path, broker_url=broker_url, prefix=prefix) as up:
        assert set(up.child_pids) == {
            "platform-sim-a",
            "platform-sim-b",
            "ingress",
            "worker-a-1",
            "worker-b-1",
            "callbacks-1",
        }
        assert (up.run_dir / "demo-key").read_text().strip() == up.key
        assert set(up.simulators) == {"a", "b"}, "the run file names both sites' simulators"
        response = httpx.post(
            f"{up.api_url}/v1/messages",
            json=submit_body(to="+31612345678", sender="TEST", text="hello through relay up"),
            headers={"Authorization": f"Bearer {up.key}"},
            timeout=10,
        )
        assert response.status_code in (200, 201, 202), response.text
        message_id = response.json()["id"]

        deadline = time.monotonic() + 30
        site = None
        while site is None and time.monotonic() < deadline:
            site = _received_by(up.simulators, message_id)
            time.sleep(0.2)
        assert site in ("a", "b"), f"message {message_id} reached no simulated platform"

        # The simulator's delivery report comes back through the report endpoint: delivered, and the
        # customer's callback says so, signed with the tenant's secret.
        headers = {"Authorization": f"Bearer {up.key}"}
        view = _view_when(up, message_id, "delivered")
        [report] = view["reports"]
        assert report["site"] == site and report["status"] == "delivered", report
        assert up.simulators[site].admin("GET", "/reports")["sent"] >= 1
        secret = subprocess.run(
            [*RELAY, "--config", str(up.config), "keys", "secret", "--tenant", "demo"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        with serving(Endpoint(secrets=[secret], behaviour=lambda path, seen: 204)) as customer:
            body = {**submit_body(to="+31612345679", sender="TEST", text="hi"), "callback_url": customer.url}
            answer = httpx.post(f"{up.api_url}/v1/messages", json=body, headers=headers, timeout=10)
            called_back = answer.json()["id"]
            _view_when(up, called_back, "delivered")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                statuses = {r.body["status"] for r in customer.by_message().get(called_back, [])}
                if "delivered" in statuses:
                    break
                time.sleep(0.2)
            assert "delivered" in statuses and all(r.verified for r in customer.received), statuses

        # A worker that dies is restarted by the launcher.
        killed_pid = up.child_pids["worker-a-1"]
        psutil.Process(killed_pid).send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 20
        replacement: list[int] = []
        while not replacement and time.monotonic() < deadline:
            replacement = [pid for pid in _worker_pids(up.process.pid, "a") if pid != killed_pid]
            time.sleep(0.2)
        assert replacement, "the killed worker was not restarted"
        assert "child_died" in up.log.read_text(errors="replace")
        children = [p.pid for p in psutil.Process(up.process.pid).children(recursive=True)]

        up.process.send_signal(signal.SIGTERM)  # the launcher alone: it must stop its children itself
        assert up.process.wait(timeout=30) == 0
        for pid in [*up.child_pids.values(), *children]:
            assert not _alive(pid), f"child {pid} outlived relay up"
        assert not (up.run_dir / RUN_FILE).exists(), "a stopped relay up leaves no run file behind"
