"""Prometheus metrics of one callback worker, in a registry of its own: the tries by result, how long
each request took, and each endpoint host's lane (read at each scrape, so a host without callbacks now
has no series)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from workers.metrics import serve_registry


class TryResult(enum.StrEnum):
    OK = "2xx"
    GONE = "gone"  # a 410: not retried, not a dead letter
    RETRY = "retry"
    DEAD = "dead"  # the last try failed: a dead callback
    REFUSED_ADDRESS = "refused-address"  # the host resolved to an address callbacks may not reach


class LaneGauges(Collector):
    """`relay_callbacks_lane_waiting{host}` and `relay_callbacks_lane_in_flight{host}`."""

    def __init__(self, source: Callable[[], dict[str, tuple[int, int]]]) -> None:
        self._source = source

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lanes = self._source()
        waiting = GaugeMetricFamily(
            "relay_callbacks_lane_waiting",
            "Callbacks waiting for a request slot of their endpoint host's lane.",
            labels=["host"],
        )
        in_flight = GaugeMetricFamily(
            "relay_callbacks_lane_in_flight",
            "Callback requests to the endpoint host under way.",
            labels=["host"],
        )
        for host, (queued, running) in sorted(lanes.items()):
            waiting.add_metric([host], float(queued))
            in_flight.add_metric([host], float(running))
        yield waiting
        yield in_flight


class CallbackMetrics:
    def __init__(self, *, lanes: Callable[[], dict[str, tuple[int, int]]]) -> None:
        self.registry = CollectorRegistry()
        self.sent = Counter(
            "relay_callbacks_sent",
            "Callback tries by result: 2xx, gone (410), retry (later), dead (the last try failed), "
            "refused-address (the host resolved to an address callbacks may not reach).",
            ["result"],
            registry=self.registry,
        )
        for result in TryResult:
            self.sent.labels(result=result.value)  # every result shows, at 0 until it happens
        self.lane_full = Counter(
            "relay_callbacks_lane_full",
            "Callbacks put back for later, not tried, because their host's lane was full or no slot came in "
            "time.",
            registry=self.registry,
        )
        self.duration = Histogram(
            "relay_callbacks_request_duration_seconds",
            "Time of one callback request: resolving, connecting, the endpoint's answer.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.registry.register(LaneGauges(lanes))

    def tried(self, result: TryResult) -> None:
        self.sent.labels(result=result.value).inc()

    def serve(self, port: int) -> None:
        serve_registry(self.registry, port, option="--metrics-port (callbacks.metrics_port)")
