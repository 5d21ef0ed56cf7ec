"""Fixtures shared by unit and integration tests.

The broker comes from ``RELAY_TEST_BROKER_URL`` (or ``RELAY_BROKER__URL``), else a RabbitMQ listening on
127.0.0.1:5672, else a testcontainers RabbitMQ. With ``CI`` set, a missing service fails the test run
instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from ops.harness.cleanup import delete_broker_names
from ops.harness.deployment import Deployment, relay_up
from ops.harness.jasmin import JasminInstance, running_jasmin
from ops.harness.processes import PeerMissing
from ops.harness.rabbit_cluster import ClusterFailed, RabbitCluster, cluster_possible
from ops.harness.smsc import RunningSmsc, running_smsc
from shared.settings import Settings, StoreSettings, load_settings
from shared.store.migrate import upgrade
from tests.helpers import SITES, listening, missing_service

LOCAL_BROKER = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture(scope="session")
def broker_url() -> Iterator[str]:
    url = os.environ.get("RELAY_TEST_BROKER_URL") or os.environ.get("RELAY_BROKER__URL")
    if url:
        yield url
        return
    if listening("127.0.0.1", 5672):
        yield LOCAL_BROKER
        return
    try:
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3.13-management") as container:
            host = container.get_container_host_ip()
            port = container.get_exposed_port(5672)
            yield f"amqp://guest:guest@{host}:{port}/"
    except Exception as exc:
        missing_service(f"no RabbitMQ: set RELAY_TEST_BROKER_URL, run one locally, or have Docker ({exc!r})")


@pytest.fixture
def prefix() -> str:
    """A topology prefix of this test alone, so tests never see each other's queues."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def broker_cleanup(broker_url: str, prefix: str) -> AsyncIterator[None]:
    """Deletes this test's queues and exchanges afterwards."""
    yield
    await delete_broker_names(broker_url, Settings(broker={"url": broker_url, "prefix": prefix}, sites=SITES))  # type: ignore[arg-type]


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """A fresh, migrated SQLite file."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}"
    upgrade(StoreSettings(url=url))
    return url


@pytest.fixture
def settings_factory(tmp_path: Path, broker_url: str, prefix: str):  # type: ignore[no-untyped-def]
    """Settings of one test: its own prefix, store file and spool file; keyword overrides per section."""

    def make(**sections: object) -> Settings:
        base: dict[str, object] = {
            "broker": {"url": broker_url, "prefix": prefix, "confirm_timeout_s": 2.0},
            "store": {"url": f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}"},
            "ingress": {"spool_path": str(tmp_path / "spool.db"), "port": 0},
            "log": {"json": True, "level": "WARNING"},
            "sites": SITES,
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(base.get(key), dict):
                base[key] = {**base[key], **value}  # type: ignore[dict-item]
            else:
                base[key] = value
        return load_settings(**base)

    return make


@pytest.fixture(scope="session")
def kannel_binaries() -> dict[str, str]:
    paths = {
        "bearerbox": shutil.which("bearerbox") or "/usr/sbin/bearerbox",
        "smsbox": shutil.which("smsbox") or "/usr/sbin/smsbox",
        "fakesmsc": "/usr/lib/kannel/test/fakesmsc",
    }
    for name, path in paths.items():
        if not Path(path).exists():
            missing_service(f"Kannel's {name} is not installed (apt-get install kannel kannel-extras)")
    return paths


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    try:
        return (yield)
    except PeerMissing as exc:
        missing_service(str(exc))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    try:
        return (yield)
    except PeerMissing as exc:
        missing_service(str(exc))


@pytest.fixture(scope="session")
def rabbit_cluster() -> Iterator[RabbitCluster]:
    """A three-node cluster for the tests marked `cluster`; skipped where none can start (failed in CI)."""
    reason = cluster_possible()
    if reason is not None:
        missing_service(reason)
    cluster = RabbitCluster(root=Path(tempfile.mkdtemp(prefix="relay-cluster-")))
    try:
        cluster.start()
    except (ClusterFailed, OSError, subprocess.TimeoutExpired) as exc:
        cluster.stop()
        missing_service(f"no three-node RabbitMQ cluster could form here: {exc}")
    print(f"\nthree-node RabbitMQ cluster formed in {cluster.formed_in_s:.1f} s")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_deployment(tmp_path: Path, rabbit_cluster: RabbitCluster) -> Iterator[Deployment]:
    """`relay up` on the three-node cluster (every node in `broker.url`, their management APIs named),
    with workers that notice a lost node fast; the cluster made whole again afterwards."""
    with relay_up(
        tmp_path,
        broker_url=rabbit_cluster.urls,
        prefix=f"t{uuid.uuid4().hex[:10]}",
        worker={"heartbeat_interval_s": 0.5, "grace_s": 3.0},
        broker={"confirm_timeout_s": 2.0, "management_url": rabbit_cluster.management_urls},
    ) as up:
        try:
            yield up
        finally:
            rabbit_cluster.revive()


# The simulated SMSC and a Jasmin 0.11.1 routing to it, one of each per test module that asks (a module can
# override either, e.g. for Jasmin 0.11.0 with its delivery reports).
@pytest.fixture(scope="module")
def smsc() -> Iterator[RunningSmsc]:
    with running_smsc() as running:
        yield running


@pytest.fixture(scope="module")
def jasmin(tmp_path_factory: pytest.TempPathFactory, smsc: RunningSmsc) -> Iterator[JasminInstance]:
    with running_jasmin(tmp_path_factory.mktemp("jasmin"), smsc_port=smsc.port) as instance:
        yield instance
