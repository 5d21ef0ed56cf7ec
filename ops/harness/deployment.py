"""A relay configuration of its own on this machine, and the whole relay running it through `relay up`.

Each configuration has its own broker prefix, store and spool files, and ports nobody else uses, so runs
never see each other's queues; `relay up` starts a simulated platform for every site (they are all on
this machine), and its run file says where their admin APIs answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.harness.cleanup import delete_broker_names
from ops.harness.processes import RELAY, free_port, spawned
from ops.harness.simulators import SimulatorAdmin
from ops.run_dir import read_run_file
from shared.config_file import use_config_file
from shared.settings import Settings, load_settings

SITES = ("a", "b")
UP_READY_TIMEOUT_S = 120.0
UP_STOP_TIMEOUT_S = 30.0  # relay up gives its workers their grace time first
# Workers that notice a failed platform and recover from it within seconds, not minutes.
QUICK_WORKER: dict[str, Any] = {
    "concurrency": 16,
    "metrics_port": 0,
    "heartbeat_interval_s": 0.5,
    "breaker_failure_threshold": 3,
    "breaker_cooldown_s": 1.0,
    "retry_delays_s": [1, 2, 3],
    "grace_s": 3.0,
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_tables(sections: Mapping[str, Mapping[str, Any]]) -> str:
    """Flat TOML tables: `{"sites.a": {"url": ...}}` is the table `[sites.a]`."""
    lines: list[str] = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


def write_toml(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    path.write_text(toml_tables(sections), encoding="utf-8")
    return path


def settings_of(config: Path) -> Settings:
    """The settings a relay process started with `--config config` reads."""
    use_config_file(config)
    try:
        return load_settings()
    finally:
        use_config_file(None)


async def delete_topology(broker_url: str, config: Path) -> None:
    """Delete the broker names of the relay configured by `config`."""
    await delete_broker_names(broker_url, settings_of(config))


def local_config(
    directory: Path,
    *,
    broker_url: str | list[str],
    prefix: str,
    sites: Mapping[str, Mapping[str, Any]],
    worker: Mapping[str, Any] | None = None,
    **tables: Mapping[str, Any],
) -> Path:
    """A whole relay's configuration in `directory`: its own prefix, store, spool and a free API port,
    quiet logs, `QUICK_WORKER` with `worker` over it, and the given sites (`[sites.<name>]` tables); keys
    in `tables` (`broker={...}`, `ingress={...}`) replace those of the table of that name."""
    sections: dict[str, Mapping[str, Any]] = {
        "broker": {"url": broker_url, "prefix": prefix, "confirm_timeout_s": 2.0},
        "store": {"url": f"sqlite+aiosqlite:///{directory / f'{prefix}.db'}"},
        "ingress": {
            "host": "127.0.0.1",
            "port": free_port(),
            "spool_path": str(directory / f"{prefix}.spool.db"),
        },
        "worker": {**QUICK_WORKER, **(worker or {})},
        "log": {"level": "WARNING", "json": True},
    }
    for table, values in tables.items():
        sections[table] = {**sections.get(table, {}), **values}
    sections |= {f"sites.{site}": values for site, values in sites.items()}
    return write_toml(directory / "relay.toml", sections)


def http_json_sites_on_free_ports(*, timeout_s: float = 1.0) -> dict[str, dict[str, Any]]:
    """Sites a and b with http-json platforms on free local ports: `relay up` simulates them."""
    return {
        site: {"url": f"http://127.0.0.1:{free_port()}/v1.0/message", "timeout_s": timeout_s}
        for site in SITES
    }


@dataclass(frozen=True, slots=True, kw_only=True)
class Deployment:
    config: Path
    run_dir: Path
    api_url: str
    key: str  # the demo tenant's API key
    child_pids: dict[str, int]  # as relay up's banner lists them: "ingress", "worker-a-1", ...
    simulators: dict[str, SimulatorAdmin]
    process: subprocess.Popen[bytes]
    log: Path


@contextlib.contextmanager
def relay_up(
    directory: Path,
    *,
    broker_url: str | list[str],
    prefix: str,
    worker: Mapping[str, Any] | None = None,
    sites: Mapping[str, Mapping[str, Any]] | None = None,
    reports: bool = True,
    metrics_base_port: int = 0,
    workers_per_site: int | None = None,
    **tables: Mapping[str, Any],
) -> Iterator[Deployment]:
    """`relay up` of a configuration of its own in `directory` (`local_config`; sites a and b simulated
    unless `sites`; their delivery reports on unless not `reports`; metrics ports from
    `metrics_base_port` on, none with 0; `relay up`'s own number of workers per site unless
    `workers_per_site`), until the block ends; then stopped
    and its broker names deleted (call it outside an event loop)."""
    config = local_config(
        directory,
        broker_url=broker_url,
        prefix=prefix,
        sites=sites or http_json_sites_on_free_ports(),
        worker=worker,
        **tables,
    )
    settings = settings_of(config)
    run_dir = directory / "run"
    log = directory / "up.log"
    args = [*RELAY, "--config", str(config), "up", "--run-dir", str(run_dir)]
    args += ["--metrics-base-port", str(metrics_base_port)]
    if not reports:
        args.append("--no-reports")
    if workers_per_site is not None:
        args += ["--workers-per-site", str(workers_per_site)]
    try:
        with spawned(args, log=log, cwd=directory, stop_timeout_s=UP_STOP_TIMEOUT_S) as up:
            key, pids = _wait_for_banner(log, up)
            run = read_run_file(run_dir)
            yield Deployment(
                config=config,
                run_dir=run_dir,
                api_url=f"http://127.0.0.1:{settings.ingress.port}",
                key=key,
                child_pids=pids,
                simulators={
                    site: SimulatorAdmin(site=site, admin_url=url)
                    for site, url in (run.simulators if run is not None else {}).items()
                },
                process=up,
                log=log,
            )
    finally:
        asyncio.run(delete_broker_names(settings.broker.urls[0], settings))


def _wait_for_banner(log: Path, process: subprocess.Popen[bytes]) -> tuple[str, dict[str, int]]:
    """The demo key and the child pids relay up prints once the relay is up."""
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
    raise RuntimeError(f"relay up did not become ready:\n{log.read_text(errors='replace')[-4000:]}")
