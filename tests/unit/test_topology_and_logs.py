from __future__ import annotations

import json

import structlog

from shared.logs import configure_logging, mask_number
from shared.model import Job
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
    topology = Topology(
        prefix="relay", sites=("a", "b"), retry_delays_s=(1, 5), delivery_limit=7, callback_delays_s=(10, 60)
    )
    for major in (3, 4):
        specs = {spec.name: spec.arguments for spec in topology.queues(broker_major=major)}
        assert all(args["x-queue-type"] == "quorum" for args in specs.values())
        last_stops = [specs.pop("relay.parked"), specs.pop("relay.callbacks.parked")]
        for name, args in specs.items():
            assert args["x-delivery-limit"] == 7, name
            assert args["x-dead-letter-strategy"] == "at-least-once", name
            assert args["x-overflow"] == "reject-publish", name
            if name.startswith("relay.callbacks"):
                expected = "relay.callbacks"
                key = "callback" if ".delay." in name else "parked"
                assert args["x-dead-letter-routing-key"] == key, name
            else:
                expected = "relay.jobs" if ".delay." in name else "relay.parked"
            assert args["x-dead-letter-exchange"] == expected, name
        assert specs["relay.callbacks.delay.60s"]["x-message-ttl"] == 60_000
        # The last stops have no limit: 3.x has none unless one is set (and would read -1 as none at
        # all), 4.x reads -1 as none.
        for parked in last_stops:
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


def logged(capsys, **fields) -> tuple[str, dict]:
    """The JSON line one `info` call writes, and the event it holds."""
    configure_logging(level="INFO", json_output=True)
    structlog.get_logger("t").info("logged", **fields)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    return line, json.loads(line)


# Message ids are 32 hex digits: about a quarter hold a run of 8 digits or more.
IDS = [
    "5f0c12345678901234abcdef56789012",
    "12345678901234567890123456789abc",
    "0123456789abcdef0123456789abcdef",
]


def test_message_ids_survive_whatever_digits_they_hold_and_wherever_they_are(capsys) -> None:
    line, event = logged(
        capsys,
        message_id=IDS[0],
        ids=IDS,
        job={"id": IDS[1], "reference": "order-20240601123456"},
        error=f"no dead letter {IDS[2]} (message {IDS[0]})",
    )
    assert event["message_id"] == IDS[0] and event["ids"] == IDS
    assert event["job"] == {"id": IDS[1], "reference": "order-20240601123456"}
    assert event["error"] == f"no dead letter {IDS[2]} (message {IDS[0]})"
    assert all(line.count(i) >= 1 for i in IDS)


def test_numbers_and_texts_are_masked_by_their_field_at_any_depth(capsys) -> None:
    job = Job(id=IDS[0], tenant="t", to="+31612345678", sender="+31687654321", body="Your code is 123456")
    cm_request = {
        "messages": {
            "msg": [
                {
                    "from": "+31611112222",
                    "to": [{"number": "0031633334444"}],
                    "body": {"type": "AUTO", "content": "Your PIN is 9876"},
                    "reference": IDS[1],
                }
            ]
        }
    }
    twilio_form = {"To": "+31655556666", "From": "MyBank", "Body": "hello there"}
    line, event = logged(
        capsys, to="+31612345678", body="your code is 1234", job=job, request=cm_request, form=twilio_form
    )
    for secret in (
        "612345678",
        "687654321",
        "611112222",
        "633334444",
        "655556666",
        "code is",
        "PIN",
        "hello",
    ):
        assert secret not in line, secret
    assert event["to"] == mask_number("+31612345678") and event["body"] == "<17 chars>"
    assert event["job"]["id"] == IDS[0] and event["job"]["sender"] == mask_number("+31687654321")
    sent = event["request"]["messages"]["msg"][0]
    assert (
        sent["to"] == [{"number": mask_number("0031633334444")}] and sent["body"]["content"] == "<16 chars>"
    )
    assert sent["reference"] == IDS[1] and sent["body"]["type"] == "AUTO"
    assert event["form"] == {"To": mask_number("+31655556666"), "From": "MyBank", "Body": "<11 chars>"}


def test_numbers_in_errors_and_tracebacks_are_masked_and_sql_parameters_hidden(capsys) -> None:
    configure_logging(level="INFO", json_output=True)
    log = structlog.get_logger("t")
    try:
        raise ValueError(f"'+31612345678' is not a valid number (message {IDS[0]})")
    except ValueError as exc:
        log.exception("submit failed", error=exc, detail="call +31 6 1234 5678 now")
    database = (
        "(sqlite3.IntegrityError) NOT NULL constraint failed\n[SQL: INSERT INTO messages VALUES (?, ?)]\n"
        "[parameters: ('+31687654321', 'Your code is 123456')]"
    )
    log.error("store refused", error=database)
    lines = capsys.readouterr().err.strip().splitlines()
    failed, refused = json.loads(lines[-2]), json.loads(lines[-1])
    assert "31612345678" not in lines[-2] and "1234 5678" not in lines[-2]
    masked = mask_number("+31612345678")
    assert masked in failed["exception"] and masked in failed["error"]
    assert IDS[0] in failed["exception"] and IDS[0] in failed["error"]
    assert failed["detail"] == f"call {mask_number('+31 6 1234 5678')} now"
    assert "687654321" not in lines[-1] and "Your code" not in lines[-1]
    assert (
        refused["error"].endswith("[parameters: hidden]") and "[SQL: INSERT INTO messages" in refused["error"]
    )


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
