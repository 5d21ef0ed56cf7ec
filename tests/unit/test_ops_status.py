"""`relay status`'s pieces that need no services: heartbeat views, circuit summary, the ingress probe."""

from __future__ import annotations

import httpx

from ops.status import read_ingress, readyz_url
from ops.status_heartbeats import HeartbeatCollector, WorkerView, circuit_summary
from ops.status_model import SiteView, Snapshot
from ops.status_render import render_plain
from shared.model import CircuitState, Heartbeat
from shared.settings import Settings


def beat(
    worker: str, *, site: str = "a", at: float, delivered: int, circuit=CircuitState.CLOSED
) -> Heartbeat:
    return Heartbeat(
        worker=worker, host="h", pid=1, site=site, circuit=circuit, concurrency=8, in_flight=2,
        delivered_total=delivered, failed_over_total=0, metrics_port=0, started_at=0.0, at=at,
    )  # fmt: skip


def view(circuit: str) -> WorkerView:
    return WorkerView(
        worker="w", circuit=circuit, in_flight=0, concurrency=1, delivered_total=0, failed_over_total=0,
        age_s=0.0, delivered_per_s=None,
    )  # fmt: skip


def test_rate_comes_from_a_workers_last_two_beats_and_silent_workers_drop_out() -> None:
    collector = HeartbeatCollector(max_age_s=5.0)
    collector.add(beat("w1", at=100.0, delivered=0))
    collector.add(beat("w1", at=102.0, delivered=50))
    collector.add(beat("w1", at=104.0, delivered=150))  # only the last two count: 100 in 2 s
    collector.add(beat("w2", site="b", at=104.0, delivered=7))
    collector.add(beat("gone", at=90.0, delivered=1))
    views = collector.views(now_s=105.0)
    assert [v.worker for v in views["a"]] == ["w1"]
    assert views["a"][0].delivered_per_s == 50.0 and views["a"][0].age_s == 1.0
    assert views["b"][0].delivered_per_s is None  # one beat: no rate yet


def test_circuit_summary() -> None:
    assert circuit_summary([]) == "no workers"
    assert circuit_summary([view("closed"), view("closed")]) == "closed"
    assert (
        circuit_summary([view("closed"), view("open"), view("half-open")])
        == "open 1/3, half-open 1/3, closed 1/3"
    )


def test_readyz_url_asks_the_loopback_when_the_ingress_listens_everywhere() -> None:
    settings = Settings(ingress={"host": "0.0.0.0", "port": 8181})  # type: ignore[arg-type]
    assert readyz_url(settings) == "http://127.0.0.1:8181/readyz"
    assert readyz_url(Settings(ingress={"host": "::1", "port": 1})) == "http://[::1]:1/readyz"  # type: ignore[arg-type]


async def test_spool_backlog_is_read_from_readyz_even_when_not_ready() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/readyz"
        return httpx.Response(
            503, json={"ready": False, "broker": "down", "store": "ok", "spool_backlog": 42}
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        seen = await read_ingress(Settings(), client=client)
    assert seen == {"reachable": True, "ready": False, "broker": "down", "store": "ok", "spool_backlog": 42}


async def test_spool_backlog_is_unknown_when_the_ingress_does_not_answer() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        seen = await read_ingress(Settings(), client=client)
    assert seen["reachable"] is False and seen["spool_backlog"] == "unknown"


def test_plain_rendering_names_every_site_and_the_dead_letters() -> None:
    snap = Snapshot(
        at="2026-01-01T00:00:00+00:00", prefix="relay", broker="ok", broker_error=None, store="ok",
        store_error=None, ingress={"reachable": True, "ready": True, "spool_backlog": 0},
        sites=[
            SiteView(name="a", queue="relay.site.a", ready=5, consumers=2, unacked=1,
                     delay_queues={"1s": 0, "5s": 3}, circuit="closed", delivered_per_s=12.5,
                     rate_source="heartbeats"),
            SiteView(name="b", queue="relay.site.b", ready=None, consumers=None, unacked=0,
                     delay_queues={"1s": None}, circuit="no workers"),
        ],
        dead_letters={"total": 2, "by_reason": {"expired": 2}},
    )  # fmt: skip
    text = render_plain(snap)
    assert "broker ok  store ok  ingress ready  spool backlog 0" in text
    assert "site a: queue relay.site.a ready 5 unacked 1 consumers 2 delay 1s:0 5s:3 circuit closed" in text
    assert "sent 12.5/s (heartbeats)" in text
    assert "delivery reports unmatched ?" in text
    assert "site b: queue relay.site.b ready ? unacked 0 consumers ?" in text
    assert text.endswith("dead letters 2 (expired 2)")
