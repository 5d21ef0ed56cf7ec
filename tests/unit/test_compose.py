"""docker-compose.yml without a Docker engine: every relay command in it is valid, every environment
variable is a real setting, and the worker services can be scaled."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from shared.settings import load_settings
from tests.helpers import RELAY

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
ALL_SERVICES: dict[str, dict] = COMPOSE["services"]
# The small shape, what `docker compose up` starts: the services without a profile (the production
# profile's are checked in test_compose_production).
SERVICES = {name: svc for name, svc in ALL_SERVICES.items() if not svc.get("profiles")}
RELAY_SERVICES = {
    name: svc for name, svc in SERVICES.items() if svc.get("image", "").startswith("sms-ha-relay")
}
WORKERS = {name: svc for name, svc in SERVICES.items() if name.startswith("worker-")}


def image_entrypoint() -> list[str]:
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        if line.startswith("ENTRYPOINT"):
            return json.loads(line.removeprefix("ENTRYPOINT").strip())
    raise AssertionError("the Dockerfile has no ENTRYPOINT")


def relay_invocations(service: dict) -> list[list[str]]:
    """Each `relay ...` command line the service runs, as argv."""
    entrypoint = service.get("entrypoint") or image_entrypoint()
    command = service.get("command") or []
    if isinstance(command, str):
        command = shlex.split(command)
    if entrypoint == ["relay"]:
        return [["relay", *command]]
    assert entrypoint[:2] == ["sh", "-c"], f"unexpected entrypoint {entrypoint}"
    script = " ".join(command)
    found = []
    for part in re.split(r"&&|;", script):
        argv = shlex.split(part)
        if argv and argv[0] == "exec":
            argv = argv[1:]
        if argv and argv[0] == "relay":
            found.append(argv)
    return found


def all_invocations() -> list[tuple[str, list[str]]]:
    return [(name, argv) for name, svc in RELAY_SERVICES.items() for argv in relay_invocations(svc)]


def test_the_expected_services_exist() -> None:
    assert set(SERVICES) == {"rabbitmq", "ingress", "worker-a", "worker-b", "sim-a", "sim-b", "callbacks"}
    assert image_entrypoint() == ["relay"]
    commands = {name: argv[1] for name, argv in all_invocations()}
    assert commands["worker-a"] == commands["worker-b"] == "worker"
    assert commands["sim-a"] == commands["sim-b"] == "platform-sim"
    assert commands["callbacks"] == "callbacks"
    ingress = [argv[1:] for name, argv in all_invocations() if name == "ingress"]
    assert ingress[0][:2] == ["db", "upgrade"] and ingress[-1][0] == "ingress"


@pytest.fixture(scope="module")
def help_results() -> dict[str, tuple[int, str]]:
    """`relay <the service's args> --help` of every invocation, run side by side.

    --help after the real options: click rejects an unknown option or sub-command before it prints help.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    procs = {
        " ".join(argv): subprocess.Popen(
            [*RELAY, *argv[1:], "--help"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _, argv in all_invocations()
    }
    results = {}
    for line, proc in procs.items():
        _, err = proc.communicate(timeout=90)
        results[line] = (proc.returncode, err)
    return results


@pytest.mark.parametrize(
    ("service", "argv"), all_invocations(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_each_relay_command_is_a_valid_invocation(
    service: str, argv: list[str], help_results: dict[str, tuple[int, str]]
) -> None:
    code, err = help_results[" ".join(argv)]
    assert code == 0, f"{service}: `{' '.join(argv)}` is not valid: {err[-800:]}"


@pytest.mark.parametrize("service", sorted(RELAY_SERVICES))
def test_the_environment_is_valid_configuration(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RELAY_"):
            monkeypatch.delenv(name)
    environment = RELAY_SERVICES[service].get("environment") or {}
    assert isinstance(environment, dict)
    for key, value in environment.items():
        assert key.startswith("RELAY_"), key
        monkeypatch.setenv(key, str(value))
    settings = load_settings()
    assert urlsplit(settings.broker.urls[0]).hostname == "rabbitmq"
    assert settings.site_names == ["a", "b"]
    for site_name, site in settings.sites.items():
        host = urlsplit(site.url).hostname
        assert host == f"sim-{site_name}" and host in SERVICES


def test_scalable_workers_hold_nothing_a_second_replica_would_fight_over() -> None:
    assert set(WORKERS) == {"worker-a", "worker-b"}
    named_volumes = set(COMPOSE.get("volumes") or {})
    for name, svc in WORKERS.items():
        assert "container_name" not in svc, name
        assert not svc.get("ports"), f"{name} maps host ports: a second replica could not start"
        for volume in svc.get("volumes") or []:
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source")
            assert source not in named_volumes, f"{name} shares the named volume {source}"
        assert svc["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert svc["restart"] == "unless-stopped"


def test_broker_store_and_health() -> None:
    broker = SERVICES["rabbitmq"]
    assert broker["image"].startswith("rabbitmq:3.13-management")
    assert broker["healthcheck"]["test"][-3:] == ["rabbitmq-diagnostics", "-q", "ping"]
    declared = set(COMPOSE["volumes"])
    used = {
        v.split(":")[0] for svc in SERVICES.values() for v in svc.get("volumes") or [] if isinstance(v, str)
    }
    assert used <= declared and {"rabbitmq-data", "relay-data"} <= used
    ingress = SERVICES["ingress"]
    assert ingress["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    assert ingress["environment"]["RELAY_STORE__URL"].startswith("sqlite+aiosqlite:////data/")
    assert any(v.startswith("relay-data:/data") for v in ingress["volumes"])
    for name, svc in SERVICES.items():
        assert svc.get("restart") == "unless-stopped", name


def test_the_image_copies_everything_pip_install_needs() -> None:
    import tomllib

    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    copied = set()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            copied.update(line.split()[1:-1])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"the image lacks {sorted(packages - copied)}"
    assert {"pyproject.toml", project["project"]["readme"]} <= copied
    assert "USER relay" in dockerfile  # not root
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert not packages & set(ignored) and ".venv" in ignored
