"""A worker's metrics say why its site's platform takes no traffic, beside the circuit state."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared.model import CircuitState
from workers.metrics import WorkerMetrics, problem_kind


def _problems(metrics: WorkerMetrics) -> dict[tuple[str, str], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (sample.labels["site"], sample.labels["problem"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "relay_worker_platform_problem"
        for sample in family.samples
    }


def test_problem_kinds_leave_out_what_varies() -> None:
    assert problem_kind("SMSC unreachable: [Errno 111] Connect call failed") == "SMSC unreachable"
    assert problem_kind("wrong sendsms URL (404 Unknown request.)") == "wrong sendsms URL"
    assert problem_kind("authentication failed") == "authentication failed"
    assert problem_kind("HTTP 503 from Jasmin") == "HTTP 503 from Jasmin"


def test_the_platform_problem_is_1_while_it_lasts_and_0_after() -> None:
    metrics = WorkerMetrics(site="a")
    problem: list[str | None] = [None]
    metrics.watch_problem(lambda: problem[0])
    assert _problems(metrics) == {}
    problem[0] = "authentication failed"
    assert _problems(metrics) == {("a", "authentication failed"): 1.0}
    problem[0] = "SMSC unreachable: [Errno 111] Connect call failed ('127.0.0.1', 2775)"
    assert _problems(metrics) == {("a", "authentication failed"): 0.0, ("a", "SMSC unreachable"): 1.0}
    problem[0] = None
    assert _problems(metrics) == {("a", "authentication failed"): 0.0, ("a", "SMSC unreachable"): 0.0}


def test_a_second_source_replaces_the_first_and_the_circuit_is_beside_it() -> None:
    metrics = WorkerMetrics(site="b")
    metrics.watch_problem(lambda: "no balance")
    metrics.watch_problem(lambda: "authentication failed")
    metrics.set_circuit(CircuitState.OPEN)
    text = generate_latest(metrics.registry).decode()
    assert 'relay_worker_circuit_state{site="b"} 2.0' in text
    assert _problems(metrics) == {("b", "authentication failed"): 1.0}
