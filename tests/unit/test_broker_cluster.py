from __future__ import annotations

from pathlib import Path

import pytest

from shared.broker import ClusterConnection, node_order
from shared.config_file import use_config_file
from shared.errors import ConfigError
from shared.settings import load_settings
from shared.topology import Topology

NODES = ["amqp://u:p@n1:5672/", "amqp://u:p@n2:5672/", "amqp://u:p@n3:5672/"]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(__import__("os").environ):
        if var.startswith("RELAY_"):
            monkeypatch.delenv(var)


def test_broker_url_is_one_url_or_a_toml_list(tmp_path: Path, clean_env: None) -> None:
    path = tmp_path / "relay.toml"
    path.write_text('[broker]\nurl = ["amqp://u:p@n1:5672/", "amqp://u:p@n2:5672/"]\n')
    use_config_file(path)
    try:
        assert load_settings().broker.urls == NODES[:2]
    finally:
        use_config_file(None)
    assert load_settings(broker={"url": NODES[0]}).broker.urls == NODES[:1]


def test_broker_url_in_the_environment_is_a_json_list_or_one_url(
    monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    monkeypatch.setenv("RELAY_BROKER__URL", '["amqp://u:p@n1:5672/", "amqp://u:p@n3:5672/"]')
    assert load_settings().broker.urls == [NODES[0], NODES[2]]
    monkeypatch.setenv("RELAY_BROKER__URL", NODES[1])
    assert load_settings().broker.urls == [NODES[1]]


def test_an_empty_node_list_is_refused(clean_env: None) -> None:
    with pytest.raises(ConfigError, match=r"broker\.url"):
        load_settings(broker={"url": []})


def test_each_process_starts_from_another_node_and_keeps_the_list_order() -> None:
    firsts = {node_order(NODES, start)[0] for start in range(3)}
    assert firsts == set(NODES)
    assert node_order(NODES, 4) == [NODES[1], NODES[2], NODES[0]]
    assert node_order(NODES[:1], 12345) == NODES[:1]


async def test_every_attempt_tries_the_nodes_in_turn_from_the_one_after_the_last_reached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing listens on port 1: each node refuses at once, and the attempt fails only after all three.
    refused = [f"amqp://u:p@127.0.0.1:1/?n={index}" for index in range(3)]
    connection = ClusterConnection(nodes=refused, client_properties={})
    tried: list[str] = []

    async def record(self: ClusterConnection, *_: object) -> None:
        tried.append(str(self.url))
        raise ConnectionRefusedError

    monkeypatch.setattr("aio_pika.connection.Connection.connect", record)
    with pytest.raises(ConnectionRefusedError):
        await connection._RobustConnection__connect_transport()
    assert [url.rsplit("=", 1)[1] for url in tried] == ["0", "1", "2"]
    tried.clear()
    with pytest.raises(ConnectionRefusedError):
        await connection._RobustConnection__connect_transport()
    assert len(tried) == 3


def test_every_quorum_queue_asks_for_the_group_size() -> None:
    topology = Topology(prefix="p", sites=("a", "b"), retry_delays_s=(5,), quorum_group_size=3)
    for major in (3, 4):
        specs = topology.queues(broker_major=major)
        assert specs
        assert all(spec.arguments["x-quorum-initial-group-size"] == 3 for spec in specs)
