"""The broker cluster in `relay status`: management URLs from the settings, the view of what the API
answers, and the line it degrades to when no node's API answers (the API itself is faked here; the
integration test reads a real three-node cluster's)."""

from __future__ import annotations

import httpx

from ops.broker_management import Management, endpoints, vhost_of
from ops.status_cluster import cluster_lines, cluster_view, read_cluster
from ops.status_model import Snapshot
from ops.status_render import render_plain
from shared.broker_settings import BrokerSettings

N1, N2, N3 = "rabbit@n1", "rabbit@n2", "rabbit@n3"


def quorum(name: str, leader: str, online: list[str]) -> dict[str, object]:
    return {"name": name, "type": "quorum", "leader": leader, "members": [N1, N2, N3], "online": online}


def test_management_urls_default_to_port_15672_of_each_broker_host_with_its_credentials() -> None:
    settings = BrokerSettings(
        url=["amqp://relay:s%40cret@h1:5672/prod", "amqp://relay:s%40cret@h2:5673/prod"]
    )
    assert settings.management_urls == ["http://h1:15672/", "http://h2:15672/"]
    assert [(e.base_url, e.auth) for e in endpoints(settings)] == [
        ("http://h1:15672/", ("relay", "s@cret")),
        ("http://h2:15672/", ("relay", "s@cret")),
    ]
    assert vhost_of(settings) == "prod"
    assert vhost_of(BrokerSettings(url="amqp://h1/")) == "/"
    own = BrokerSettings(url="amqp://h1/", management_url="https://ops:pw@mgmt.example:443/rabbit")
    assert [(e.base_url, e.auth) for e in endpoints(own)] == [
        ("https://mgmt.example:443/rabbit/", ("ops", "pw"))
    ]


def test_a_view_lists_each_nodes_leads_and_warns_of_a_queue_short_of_replicas() -> None:
    nodes = [{"name": N1, "running": False}, {"name": N2, "running": True}, {"name": N3, "running": True}]
    queues = [
        quorum("relay.site.b", N3, [N2, N3]),
        quorum("relay.site.a", N2, [N2, N3]),
        {"name": "relay.classic", "type": "classic", "node": N2},
    ]
    view = cluster_view(nodes, queues, group_size=3, source="http://h2:15672/")
    assert [(n.name, n.running, n.leads) for n in view.nodes] == [
        (N1, False, []),
        (N2, True, ["relay.site.a"]),
        (N3, True, ["relay.site.b"]),
    ]
    assert [q.name for q in view.queues] == ["relay.site.a", "relay.site.b"]
    assert view.warnings == [
        f"node {N1} is down",
        "queue relay.site.a has 2 of 3 replicas in sync (broker.quorum_group_size 3, 3 nodes)",
        "queue relay.site.b has 2 of 3 replicas in sync (broker.quorum_group_size 3, 3 nodes)",
    ]
    lines = cluster_lines(view)
    assert f"  node {N1} DOWN  leads no relay queue" in lines
    assert f"  queue relay.site.a leader {N2} replicas in sync 2/3 ({N2}, {N3})" in lines


def test_the_group_size_asked_for_is_capped_by_the_clusters_size() -> None:
    view = cluster_view(
        [{"name": N1, "running": True}],
        [{"name": "relay.site.a", "type": "quorum", "leader": N1, "members": [N1], "online": [N1]}],
        group_size=3,
        source=None,
    )
    assert view.queues[0].wanted == 1 and not view.warnings


async def test_a_dead_nodes_api_is_skipped_and_none_answering_is_one_clear_line() -> None:
    asked: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        asked.append(f"{request.url.host} {request.url.raw_path.decode()}")
        if request.url.host == "h1":
            raise httpx.ConnectError("refused", request=request)
        assert request.headers["authorization"].startswith("Basic ")
        if request.url.path == "/api/nodes":
            return httpx.Response(200, json=[{"name": N1, "running": False}, {"name": N2, "running": True}])
        assert request.url.raw_path == b"/api/queues/%2F"
        return httpx.Response(200, json=[quorum("relay.site.a", N2, [N2]), quorum("other.q", N2, [N2])])

    settings = BrokerSettings(url=["amqp://h1:5672/", "amqp://h2:5672/"])
    async with httpx.AsyncClient(transport=httpx.MockTransport(api)) as client:
        view = await read_cluster(settings, client=client)
    assert view.reachable and view.source == "http://h2:15672/"
    assert [q.name for q in view.queues] == ["relay.site.a"]
    # Once h2 answered, it is asked first.
    assert asked == ["h1 /api/nodes", "h2 /api/nodes", "h2 /api/queues/%2F"]

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        down = await read_cluster(settings, client=client)
        api_down = Management(settings=settings, client=client)
        assert api_down.urls == ["http://h1:15672/", "http://h2:15672/"]
    assert not down.reachable
    assert cluster_lines(down) == [
        "broker nodes: management API unreachable (http://h1:15672/: ConnectError: refused; "
        "http://h2:15672/: ConnectError: refused)"
    ]
    snap = Snapshot(
        at="t", prefix="relay", broker="ok", broker_error=None, store="ok", store_error=None,
        ingress={"reachable": False}, sites=[], dead_letters={"total": 0}, cluster=down,
    )  # fmt: skip
    assert "broker nodes: management API unreachable" in render_plain(snap)
    assert snap.to_dict()["cluster"]["reachable"] is False
