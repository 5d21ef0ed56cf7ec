from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from shared.envelope import (
    UnreadableJob,
    decode_dead,
    decode_events,
    decode_job_items,
    decode_jobs,
    encode_dead,
    encode_events,
    encode_job,
    encode_jobs,
    read_job,
)
from shared.errors import EnvelopeError
from shared.model import AttemptRecord, DeadReason, Job, Outcome, Status, new_message_id


def _job() -> Job:
    return Job(
        id=new_message_id(), tenant="bank", to="+31612345678", sender="MyBank", body="héllo €", expires_at=2e9
    )


def test_job_round_trip() -> None:
    job = _job()
    assert decode_jobs(encode_job(job)) == [job]


def test_bundle_round_trip() -> None:
    jobs = [_job() for _ in range(3)]
    assert decode_jobs(encode_jobs(jobs)) == jobs


def test_events_round_trip() -> None:
    records = [
        AttemptRecord(message_id="m1", site="a", attempt=1, outcome=Outcome.AMBIGUOUS, detail="timeout"),
        AttemptRecord(message_id="m1", site="b", attempt=2, outcome=Outcome.ACCEPTED, status=Status.SENT),
    ]
    assert decode_events(encode_events(records)) == records


def test_dead_round_trip() -> None:
    job = _job()
    decoded, verdict = decode_dead(
        encode_dead(job, site="a", reason=DeadReason.REJECTED, detail="403", attempts=1)
    )
    assert decoded == job
    assert verdict == {"site": "a", "reason": DeadReason.REJECTED, "detail": "403", "attempts": 1}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"v": 2, "job": {}}',
        b'{"v": 1, "job": {"id": "x"}}',
        b'{"v": 1}',
        b'{"v": 1, "jobs": []}',
        b'{"v": 1, "jobs": {"id": "x"}}',
        b'{"v": 1, "jobs": [7]}',
    ],
)
def test_garbage_is_an_envelope_error(body: bytes) -> None:
    with pytest.raises(EnvelopeError):
        decode_jobs(body)


def _loaded(body: bytes) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(body)
    return data


def test_fields_a_newer_producer_added_are_ignored_and_missing_optional_ones_take_their_default() -> None:
    job = _job()
    newer = _loaded(encode_job(job))
    newer["job"]["priority"] = "high"
    newer["trace"] = "abc"
    assert decode_jobs(orjson.dumps(newer)) == [job]
    older = _loaded(encode_job(job))
    del older["job"]["encoding"], older["job"]["segments"]
    assert decode_jobs(orjson.dumps(older)) == [job]

    record = AttemptRecord(message_id="m1", site="a", attempt=1, outcome=Outcome.ACCEPTED, at=5.0)
    events = _loaded(encode_events([record]))
    events["events"][0]["region"] = "eu"
    del events["events"][0]["possible_duplicate"]  # a producer from before the field
    assert decode_events(orjson.dumps(events)) == [record]

    dead = _loaded(encode_dead(job, site="a", reason=DeadReason.EXPIRED, detail="", attempts=0))
    dead["dead"]["job"]["priority"] = "high"
    dead["dead"]["operator_note"] = "x"
    assert decode_dead(orjson.dumps(dead)) == (
        job,
        {"site": "a", "reason": DeadReason.EXPIRED, "detail": "", "attempts": 0},
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda item: item.pop("to"), "to"),
        (lambda item: item.update(expires_at="soon"), "expires_at"),
        (lambda item: item.update(id=7), "id"),
    ],
)
def test_a_missing_required_field_or_a_wrong_type_is_malformed(
    change: Callable[[dict[str, Any]], object], field: str
) -> None:
    data = _loaded(encode_job(_job()))
    change(data["job"])
    with pytest.raises(EnvelopeError, match=field):
        decode_jobs(orjson.dumps(data))
    with pytest.raises(EnvelopeError, match=field):
        read_job(data["job"])


def test_the_jobs_of_a_bundle_are_read_one_by_one() -> None:
    first, last = _job(), _job()
    broken = _loaded(encode_job(_job()))["job"]
    del broken["tenant"]
    body = orjson.dumps({"v": 1, "jobs": [first, broken, {"no": "id"}, [1], last]})
    items = decode_job_items(body)
    assert items[0] == first and items[4] == last
    unreadable = items[1:4]
    assert all(isinstance(item, UnreadableJob) for item in unreadable)
    assert [item.id for item in unreadable if isinstance(item, UnreadableJob)] == [broken["id"], None, None]
    assert isinstance(items[1], UnreadableJob) and orjson.loads(items[1].text) == broken
    assert "tenant" in items[1].error
    with pytest.raises(EnvelopeError, match="tenant"):
        decode_jobs(body)


def test_an_id_too_long_to_be_ours_is_not_taken_for_one() -> None:
    body = orjson.dumps({"v": 1, "jobs": [{"id": "x" * 33}]})
    [item] = decode_job_items(body)
    assert isinstance(item, UnreadableJob) and item.id is None


def test_events_with_an_unreadable_record_are_malformed() -> None:
    body = orjson.dumps(
        {"v": 1, "events": [{"message_id": "m1", "site": "a", "attempt": 1, "outcome": "??"}]}
    )
    with pytest.raises(EnvelopeError, match="outcome"):
        decode_events(body)


def test_heartbeat_round_trip() -> None:
    from shared.envelope import decode_heartbeat, encode_heartbeat
    from shared.model import CircuitState, Heartbeat

    beat = Heartbeat(
        worker="h:1",
        host="h",
        pid=1,
        site="a",
        circuit=CircuitState.OPEN,
        concurrency=8,
        in_flight=3,
        delivered_total=10,
        failed_over_total=2,
        metrics_port=9100,
        started_at=1.0,
    )
    assert decode_heartbeat(encode_heartbeat(beat)) == beat


def test_message_ids_are_never_handed_out_twice_even_across_a_fork() -> None:
    import os

    from shared.model import new_message_ids

    ids = new_message_ids(1) + new_message_ids(1000) + [i for _ in range(300) for i in new_message_ids(3)]
    assert len(set(ids)) == len(ids) == 1901
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child takes the next id from what would have been its parent's buffer
        os.write(write_end, new_message_ids(1)[0].encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read_end, 64).decode()
    os.close(read_end)
    os.close(write_end)
    assert len(child) == 32 and child != new_message_ids(1)[0]
