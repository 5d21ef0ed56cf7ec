"""`relay up` as a user runs it: a whole deployment on free ports, one message through it, a clean stop."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from ops.drill_traffic import submit_body
from tests.helpers import RELAY, free_port, spawned

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UP_READY_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    config: Path
    run_dir: Path
    api_url: str
    admin_urls: dict[str, str]
    key: str
    child_pids: dict[str, int]
    process: subprocess.Popen[bytes]
    log: Path


def write_config(tmp_path: Path, *, broker_url: str, prefix: str) -> tuple[Path, str, dict[str, str]]:
    """A configuration of one test: its own prefix, store, spool and free ports; fast breaker and retries."""
    api_port = free_port()
    sites = {}
    admin_urls = {}
    for site in ("a", "b"):
        port, admin_port = free_port(), free_port()
        admin_urls[site] = f"http://127.0.0.1:{admin_port}"
        sites[site] = (
            f'[sites.{site}]\nurl = "http://127.0.0.1:{port}/v1.0/message"\n'
            f'sim_admin_url = "{admin_urls[site]}"\ntimeout_s = 1.0\n'
        )
    config = tmp_path / "relay.toml"
    config.write_text(
        f'[broker]\nurl = "{broker_url}"\nprefix = "{prefix}"\nconfirm_timeout_s = 2.0\n'
        f'[store]\nurl = "sqlite+aiosqlite:///{tmp_path / "relay.db"}"\n'
        f'[ingress]\nhost = "127.0.0.1"\nport = {api_port}\nspool_path = "{tmp_path / "spool.db"}"\n'
        "[worker]\nconcurrency = 16\nmetrics_port = 0\nheartbeat_interval_s = 0.5\n"
        "breaker_failure_threshold = 3\nbreaker_cooldown_s = 1.0\nretry_delays_s = [1, 2, 3]\n"
        "grace_s = 3.0\n"
        '[log]\nlevel = "WARNING"\n' + "".join(sites.values())
    )
    return config, f"http://127.0.0.1:{api_port}", admin_urls


def _wait_for_banner(log: Path, process: subprocess.Popen[bytes]) -> tuple[str, dict[str, int]]:
    deadline = time.monotonic() + UP_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        key = re.search(r"Demo key:\s+(\S+)", text)
        pids = re.search(r"Processes:\s+(.+)", text)
        if key and pids:
            found = dict(item.split("=") for item in pids.group(1).split(", "))
            return key.group(1), {name: int(pid) for name, pid in found.items()}
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"relay up did not become ready:\n{log.read_text(errors='replace')[-4000:]}")


@contextlib.contextmanager
def relay_up(
    tmp_path: Path, *, broker_url: str, prefix: str, extra: tuple[str, ...] = ()
) -> Iterator[Deployment]:
    config, api_url, admin_urls = write_config(tmp_path, broker_url=broker_url, prefix=prefix)
    run_dir = tmp_path / "run"
    log = tmp_path / "up.log"
    args = [
        *RELAY,
        "--config",
        str(config),
        "up",
        "--run-dir",
        str(run_dir),
        "--metrics-base-port",
        "0",
        *extra,
    ]
    with spawned(args, log=log, cwd=tmp_path) as process:
        key, pids = _wait_for_banner(log, process)
        yield Deployment(
            config=config,
            run_dir=run_dir,
            api_url=api_url,
            admin_urls=admin_urls,
            key=key,
            child_pids=pids,
            process=process,
            log=log,
        )


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


def _received_by(admin_urls: dict[str, str], message_id: str) -> str | None:
    for site, admin_url in admin_urls.items():
        references = httpx.get(f"{admin_url}/references", timeout=5).json()["references"]
        if message_id in references:
            return site
    return None


def test_relay_up_serves_a_message_end_to_end_and_stops_every_child(
    tmp_path: Path, broker_url: str, prefix: str, broker_cleanup: None
) -> None:
    with relay_up(tmp_path, broker_url=broker_url, prefix=prefix) as up:
        assert set(up.child_pids) == {
            "platform-sim-a",
            "platform-sim-b",
            "ingress",
            "worker-a-1",
            "worker-b-1",
        }
        assert (up.run_dir / "demo-key").read_text().strip() == up.key
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
            site = _received_by(up.admin_urls, message_id)
            time.sleep(0.2)
        assert site in ("a", "b"), f"message {message_id} reached no simulated platform"

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
