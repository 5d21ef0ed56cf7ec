"""Prometheus metrics of one worker process, in a registry of its own (tests run several workers)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.errors import ConfigError
from shared.model import CircuitState

_CIRCUIT_VALUE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}
# A problem's kind, without what varies from one occurrence to the next (an address, an error number), so
# the label has few values: "SMSC unreachable: [Errno 111] ..." is "SMSC unreachable".
_PROBLEM_DETAIL = re.compile(r"\s*[:(].*$", re.DOTALL)
PROBLEM_KIND_CHARS = 64


def problem_kind(problem: str) -> str:
    return _PROBLEM_DETAIL.sub("", problem)[:PROBLEM_KIND_CHARS] or problem[:PROBLEM_KIND_CHARS]


class PlatformProblem(Collector):
    """`relay_worker_platform_problem{site, problem}`: 1 for the problem the adapter names now (read at
    each scrape), 0 for each one it named before, so an alert sees a problem come and go."""

    def __init__(self, *, site: str, source: Callable[[], str | None]) -> None:
        self._site = site
        self.source = source
        self._seen: set[str] = set()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        problem = self.source()
        now = problem_kind(problem) if problem else None
        if now is not None:
            self._seen.add(now)
        family = GaugeMetricFamily(
            "relay_worker_platform_problem",
            "Why the site's platform takes no traffic, as its adapter knows it (authentication failed, "
            "SMSC unreachable): 1 while it lasts.",
            labels=["site", "problem"],
        )
        for kind in sorted(self._seen):
            family.add_metric([self._site, kind], 1.0 if kind == now else 0.0)
        yield family


class WorkerMetrics:
    def __init__(self, *, site: str) -> None:
        self.site = site
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "relay_worker_deliveries",
            "Delivery attempts by the site whose platform was tried and their outcome.",
            ["site", "outcome"],
            registry=self.registry,
        )
        self.failovers = Counter(
            "relay_worker_failovers",
            "Jobs handed to another site: requeued unsent when the breaker opened, or republished.",
            ["site", "kind"],
            registry=self.registry,
        )
        self.retries = Counter(
            "relay_worker_retries",
            "Jobs sent to a delay queue for a later attempt.",
            ["site"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "relay_worker_dead_letters",
            "Jobs dead-lettered, by reason.",
            ["site", "reason"],
            registry=self.registry,
        )
        self.circuit = Gauge(
            "relay_worker_circuit_state",
            "The site's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["site"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "relay_worker_delivery_latency_seconds",
            "Time of one platform request.",
            ["site"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "relay_worker_in_flight", "Jobs held unacked right now.", ["site"], registry=self.registry
        )
        self.circuit.labels(site=site).set(0)
        self._problem: PlatformProblem | None = None

    def watch_problem(self, source: Callable[[], str | None]) -> None:
        """Report the platform problem `source` names at each scrape (the last source given wins)."""
        if self._problem is None:
            self._problem = PlatformProblem(site=self.site, source=source)
            self.registry.register(self._problem)
        else:
            self._problem.source = source

    def set_circuit(self, state: CircuitState) -> None:
        self.circuit.labels(site=self.site).set(_CIRCUIT_VALUE[state])

    def serve(self, port: int) -> None:
        serve_registry(self.registry, port, option="--metrics-port")


def serve_registry(registry: CollectorRegistry, port: int, *, option: str) -> None:
    """Serve `registry` on `port` in a thread of its own (0: not at all); `option` names the setting."""
    if not port:
        return
    try:
        start_http_server(port, registry=registry)
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on port {port} ({exc.strerror}): give each worker on a host its own "
            f"{option}, or 0 for none"
        ) from None
