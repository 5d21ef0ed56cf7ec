from __future__ import annotations

import pytest

from shared.envelope import (
    decode_dead,
    decode_events,
    decode_jobs,
    encode_dead,
    encode_events,
    encode_job,
    encode_jobs,
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
        AttemptRecord(
            message_id="m1", site="b", attempt=2, outcome=Outcome.ACCEPTED, status=Status.DELIVERED
        ),
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
