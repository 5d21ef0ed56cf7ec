"""`relay status` says why a site's circuit is open when its workers know (a refused bind, ...)."""

from __future__ import annotations

from ops.status import HeartbeatCollector, circuit_summary
from shared.envelope import decode_heartbeat, encode_heartbeat
from shared.model import CircuitState, Heartbeat


def beat(worker: str, circuit: CircuitState, problem: str | None, *, at: float = 100.0) -> Heartbeat:
    return Heartbeat(
        worker=worker,
        host="h",
        pid=1,
        site="b",
        circuit=circuit,
        concurrency=8,
        in_flight=0,
        delivered_total=0,
        failed_over_total=0,
        metrics_port=0,
        started_at=0.0,
        at=at,
        problem=problem,
    )


def test_an_open_circuit_names_the_workers_problem() -> None:
    collector = HeartbeatCollector(max_age_s=10)
    collector.add(decode_heartbeat(encode_heartbeat(beat("h:1", CircuitState.OPEN, "authentication failed"))))
    collector.add(beat("h:2", CircuitState.OPEN, "authentication failed"))
    workers = collector.views(now_s=101.0)["b"]
    assert circuit_summary(workers) == "open 2/2: authentication failed"


def test_a_closed_circuit_shows_no_stale_problem() -> None:
    collector = HeartbeatCollector(max_age_s=10)
    collector.add(beat("h:1", CircuitState.CLOSED, "authentication failed"))
    assert circuit_summary(collector.views(now_s=101.0)["b"]) == "closed"


def test_a_heartbeat_without_a_problem_still_decodes() -> None:
    assert decode_heartbeat(encode_heartbeat(beat("h:1", CircuitState.CLOSED, None))).problem is None
