from __future__ import annotations

import json

import structlog

from shared.logs import configure_logging, mask_number
from shared.topology import Topology, broker_major


def test_names_start_with_prefix_and_delay_queues_lead_back_to_their_site() -> None:
    topology = Topology(prefix="relay", sites=("a", "b"), retry_delays_s=(1, 5, 30))
    names = {spec.name: spec for spec in topology.queues()}
    assert "relay.site.a" in names and "relay.site.b" in names
    assert all(name.startswith("relay.") for name in names)
    delay = names["relay.delay.b.5s"]
    assert delay.arguments["x-message-ttl"] == 5000
    assert delay.arguments["x-dead-letter-exchange"] == "relay.jobs"
    assert delay.arguments["x-dead-letter-routing-key"] == "b"
    assert delay.arguments["x-queue-type"] == "quorum"


def test_every_quorum_queue_names_its_delivery_limit_and_where_its_dead_letters_go() -> None:
    topology = Topology(prefix="relay", sites=("a", "b"), retry_delays_s=(1, 5), delivery_limit=7)
    for major in (3, 4):
        specs = {spec.name: spec.arguments for spec in topology.queues(broker_major=major)}
        assert all(args["x-queue-type"] == "quorum" for args in specs.values())
        parked = specs.pop("relay.parked")
        for name, args in specs.items():
            assert args["x-delivery-limit"] == 7, name
            assert args["x-dead-letter-strategy"] == "at-least-once", name
            assert args["x-overflow"] == "reject-publish", name
            expected = "relay.jobs" if ".delay." in name else "relay.parked"
            assert args["x-dead-letter-exchange"] == expected, name
        # The last stop has no limit: 3.x has none unless one is set (and would read -1 as none at
        # all), 4.x reads -1 as none.
        assert "x-dead-letter-exchange" not in parked
        assert parked.get("x-delivery-limit") == (-1 if major == 4 else None)
    assert broker_major("3.10.8") == 3 and broker_major("4.1.0") == 4 and broker_major("") == 3


def test_retry_tiers_grow_then_stay_at_the_last() -> None:
    topology = Topology(prefix="p", sites=("a",), retry_delays_s=(1, 5, 30))
    assert [topology.delay_queue_for("a", n) for n in (1, 2, 3, 4, 9)] == [
        "p.delay.a.1s",
        "p.delay.a.5s",
        "p.delay.a.30s",
        "p.delay.a.30s",
        "p.delay.a.30s",
    ]


def test_logs_mask_numbers_and_bodies(capsys) -> None:
    configure_logging(level="INFO", json_output=True)
    log = structlog.get_logger("t")
    log.info("submitted", to="+31612345678", body="your code is 1234", note="call +31 6 1234 5678 now")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    event = json.loads(line)
    assert "31612345678" not in line and "your code" not in line and "1234 5678" not in line
    assert event["to"] == mask_number("+31612345678")
    assert event["body"] == "<17 chars>"


def test_logs_follow_a_replaced_stderr(monkeypatch) -> None:
    import io
    import sys

    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging(level="INFO", json_output=True)
    log = structlog.get_logger("t")
    log.info("before")
    first.close()  # as a test's capture or a daemon's redirect does
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    log.info("after")
    assert json.loads(second.getvalue().strip())["event"] == "after"
