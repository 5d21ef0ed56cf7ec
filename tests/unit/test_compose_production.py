"""docker-compose.yml's production profile without a Docker engine: three RabbitMQ nodes that cluster by
configuration, PostgreSQL, two ingress replicas behind HAProxy with /readyz checks, workers per site on all
three nodes; and the default `docker compose up` untouched by it. HAProxy's own parser checks its
configuration where haproxy is installed (CI installs it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest

from shared.settings import load_settings
from tests.helpers import missing_service
from tests.unit.test_compose import ALL_SERVICES, COMPOSE, ROOT, SERVICES, relay_invocations

PROFILE = "production"
PRODUCTION = {name: svc for name, svc in ALL_SERVICES.items() if PROFILE in (svc.get("profiles") or [])}
NODES = ("rabbit-1", "rabbit-2", "rabbit-3")
RELAY_HA = {name: svc for name, svc in PRODUCTION.items() if svc.get("image", "").startswith("sms-ha-relay")}
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
RABBIT_CONF = ROOT / "deploy" / "rabbitmq" / "rabbitmq.conf"


def interpolated(value: str) -> str:
    """`${VAR:-default}` as compose fills it in with VAR unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def mounts(service: dict) -> dict[str, str]:
    """target -> source of the service's volumes."""
    found = {}
    for volume in service.get("volumes") or []:
        source, target = volume.split(":")[:2]
        found[target] = source
    return found


def test_the_profile_has_the_production_shape_and_the_default_set_is_untouched() -> None:
    assert set(PRODUCTION) == {
        *NODES,
        "postgres",
        "migrate",
        "ingress-1",
        "ingress-2",
        "lb",
        "worker-a-ha",
        "worker-b-ha",
        "callbacks-ha",
    }
    assert set(SERVICES) | set(PRODUCTION) == set(ALL_SERVICES)
    for name, svc in PRODUCTION.items():
        assert svc["profiles"] == [PROFILE], name
    # Nothing `docker compose up` starts waits for a production service.
    for name, svc in SERVICES.items():
        assert not set(svc.get("depends_on") or {}) & set(PRODUCTION), name
    declared = set(COMPOSE["volumes"])
    for name, svc in PRODUCTION.items():
        named = {s for s in mounts(svc).values() if not s.startswith("./")}
        assert named <= declared, name
        for source in mounts(svc).values():
            assert not source.startswith("./") or (ROOT / source).exists(), (name, source)


def test_three_nodes_cluster_by_configuration_with_one_cookie() -> None:
    conf = RABBIT_CONF.read_text(encoding="utf-8")
    assert "cluster_formation.peer_discovery_backend = classic_config" in conf
    listed = re.findall(r"^cluster_formation\.classic_config\.nodes\.\d+ = rabbit@(\S+)$", conf, re.M)
    assert tuple(listed) == NODES
    cookies = set()
    for node in NODES:
        svc = PRODUCTION[node]
        assert svc["image"].startswith("rabbitmq:3.13")
        assert svc["hostname"] == node  # the node's name is rabbit@<hostname>, as the list names it
        assert mounts(svc)["/etc/rabbitmq/rabbitmq.conf"] == "./deploy/rabbitmq/rabbitmq.conf"
        assert mounts(svc)["/var/lib/rabbitmq"] == f"{node}-data"
        assert svc["healthcheck"]["test"][-3:] == ["rabbitmq-diagnostics", "-q", "ping"]
        cookies.add(svc["environment"]["RABBITMQ_ERLANG_COOKIE"])
    assert len(cookies) == 1


@pytest.mark.parametrize("service", sorted(RELAY_HA))
def test_every_relay_process_uses_all_three_nodes_and_postgresql(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("RELAY_"):
            monkeypatch.delenv(name)
    for key, value in RELAY_HA[service]["environment"].items():
        monkeypatch.setenv(key, interpolated(str(value)))
    settings = load_settings()
    assert [urlsplit(url).hostname for url in settings.broker.urls] == list(NODES)
    assert [urlsplit(url).hostname for url in settings.broker.management_urls] == list(NODES)
    assert settings.broker.quorum_group_size == 3
    assert settings.store.url.startswith("postgresql+asyncpg://") and "@postgres:" in settings.store.url
    for site in settings.sites.values():
        assert urlsplit(site.url).hostname in ALL_SERVICES
    # The same commands the small shape runs (their arguments are checked there).
    default_commands = {tuple(argv) for svc in SERVICES.values() for argv in relay_invocations(svc)}
    for argv in relay_invocations(RELAY_HA[service]):
        assert tuple(argv) in default_commands, argv


def test_two_ingress_replicas_with_their_own_spools_and_workers_for_each_site() -> None:
    spools = {mounts(PRODUCTION[name])["/spool"] for name in ("ingress-1", "ingress-2")}
    assert spools == {"ingress-1-spool", "ingress-2-spool"}
    for name in ("ingress-1", "ingress-2"):
        depends = PRODUCTION[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert {node: depends[node]["condition"] for node in NODES} == dict.fromkeys(NODES, "service_healthy")
        assert not PRODUCTION[name].get("ports")  # reached through the load balancer only
    assert relay_invocations(PRODUCTION["migrate"]) == [["relay", "db", "upgrade"]]
    sites = {relay_invocations(PRODUCTION[name])[0][-1] for name in ("worker-a-ha", "worker-b-ha")}
    assert sites == {"a", "b"}
    assert PRODUCTION["postgres"]["healthcheck"]["test"][1] == "pg_isready"


def test_haproxy_balances_both_replicas_with_readyz_checks() -> None:
    lb = PRODUCTION["lb"]
    assert lb["image"].startswith("haproxy:")
    assert mounts(lb)["/usr/local/etc/haproxy/haproxy.cfg"] == "./deploy/haproxy/haproxy.cfg"
    assert set(lb["depends_on"]) == {"ingress-1", "ingress-2"}
    config = HAPROXY_CFG.read_text(encoding="utf-8")
    backends = dict(re.findall(r"^backend (\S+)\n((?:[ \t]+.*\n?)*)", config, re.M))
    ready = backends["ingress-ready"]
    assert re.search(r"^\s+option httpchk GET /readyz$", ready, re.M)
    ingress_port = load_settings().ingress.port
    servers = re.findall(r"^\s+server (\S+) (\S+):(\d+) (.*)$", ready, re.M)
    assert [(name, host, int(port)) for name, host, port, _ in servers] == [
        ("ingress-1", "ingress-1", ingress_port),
        ("ingress-2", "ingress-2", ingress_port),
    ]
    assert all("check" in options.split() for *_, options in servers)
    assert re.search(r"^\s+default_backend ingress-ready$", config, re.M)


def test_haproxy_accepts_its_configuration() -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        missing_service("no haproxy here (apt-get install haproxy) to check deploy/haproxy/haproxy.cfg")
        return
    # The compose service names do not resolve here: `init-addr none` lets the check pass without them.
    done = subprocess.run(
        [haproxy, "-c", "-f", str(HAPROXY_CFG)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Configuration file is valid" in done.stdout + done.stderr
