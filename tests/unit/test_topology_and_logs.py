from __future__ import annotations

import json

import structlog

from shared.logs import configure_logging, mask_number
from shared.topology import Topology


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
