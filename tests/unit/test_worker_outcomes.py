"""What a worker does with each outcome of an attempt: every job ends one way, confirmed before its ack."""

from __future__ import annotations

from shared.envelope import H_ATTEMPT, H_OUTAGE_ATTEMPT, H_POSSIBLE_DUPLICATE, H_SITE, H_SITE_ATTEMPT
from shared.model import DeadReason, Outcome, Status
from tests.worker_fakes import Message, Rooms, make_job, rooms
from workers.platforms.base import Result
from workers.settlement import Held


async def _held(
    r: Rooms, *, headers: dict[str, object] | None = None, count: int = 1
) -> tuple[Message, list[Held]]:
    message = Message([make_job() for _ in range(count)], headers=headers)
    return message, await r.intake.hold(message.incoming(), "a")


async def test_accepted_jobs_are_acked_after_their_records_are_confirmed() -> None:
    r = rooms()
    message, held = await _held(r, count=3)
    await r.outcomes.settle_all(held, [Result(Outcome.ACCEPTED, "ok")] * 3, 12.0)
    assert [(rec.message_id, rec.attempt, rec.status) for rec in r.recorder.records] == [
        (h.job.id, 1, Status.SENT) for h in held
    ]
    assert all(rec.latency_ms == 12.0 and rec.worker == "host:1" for rec in r.recorder.records)
    assert message.settled == ["ack"] and r.outcomes.totals.delivered == 3


async def test_an_accepted_job_whose_record_is_not_confirmed_goes_back_unacked() -> None:
    r = rooms()
    r.recorder.fail = True
    message, held = await _held(r)
    await r.outcomes.settle_all(held, [Result(Outcome.ACCEPTED, "ok")], 1.0)
    assert message.settled == ["nack requeue=True"] and r.outcomes.totals.delivered == 0


async def test_a_rejected_job_is_dead_lettered_with_the_platforms_detail() -> None:
    r = rooms()
    message, [held] = await _held(r)
    await r.outcomes.settle(held, Result(Outcome.REJECTED, "403 not routable"), 5.0)
    [dead] = r.publisher.to("unit.dead")
    job, verdict = dead.dead
    assert job == held.job
    assert verdict == {
        "site": "a",
        "reason": DeadReason.REJECTED,
        "detail": "403 not routable",
        "attempts": 1,
    }
    assert [rec.status for rec in r.recorder.records] == [Status.REJECTED]
    assert message.settled == ["ack"]


async def test_a_dead_letter_not_confirmed_leaves_the_job_to_its_queue() -> None:
    r = rooms()
    r.publisher.fail = True
    message, [held] = await _held(r)
    await r.outcomes.settle(held, Result(Outcome.REJECTED, "no"), 5.0)
    assert message.settled == ["nack requeue=True"]


async def test_an_unavailable_job_is_republished_to_a_delay_queue_with_the_next_headers() -> None:
    r = rooms(breaker_failure_threshold=10)
    message, [held] = await _held(r)
    await r.outcomes.settle(held, Result(Outcome.UNAVAILABLE, "refused"), 1.0)
    [retry] = r.publisher.published
    assert retry.exchange == "" and retry.routing_key == r.topology.delay_queue_for("a", 1)
    assert retry.body == message.body and retry.message_id == held.job.id
    assert (retry.headers[H_ATTEMPT], retry.headers[H_SITE_ATTEMPT], retry.headers[H_SITE]) == (1, 1, "a")
    [record] = r.recorder.records
    assert (record.outcome, record.status, record.attempt) == (Outcome.UNAVAILABLE, Status.RETRYING, 1)
    assert message.settled == ["ack"]


async def test_a_job_out_of_a_bundle_is_republished_alone() -> None:
    r = rooms(breaker_failure_threshold=10)
    message, held = await _held(r, count=2)
    await r.outcomes.settle(held[1], Result(Outcome.AMBIGUOUS, "timeout"), 1.0)
    [retry] = r.publisher.published
    assert retry.jobs == [held[1].job]
    assert message.settled == []  # its sibling is not settled yet


async def test_once_the_breaker_opens_a_failed_job_goes_straight_to_the_next_site() -> None:
    r = rooms(breaker_failure_threshold=1)
    message, [held] = await _held(r)
    await r.outcomes.settle(held, Result(Outcome.UNAVAILABLE, "refused"), 1.0)
    assert not r.circuit.allows_traffic()
    [handover] = r.publisher.published
    assert (handover.exchange, handover.routing_key) == ("unit.jobs", "b")
    assert handover.headers[H_SITE] == "b" and handover.headers[H_OUTAGE_ATTEMPT] == 1
    assert r.outcomes.totals.failed_over == 1 and message.settled == ["ack"]


async def test_attempts_exhausted_end_as_a_dead_letter() -> None:
    r = rooms(breaker_failure_threshold=10, max_attempts=3)
    message, [held] = await _held(r, headers={H_ATTEMPT: 2, H_SITE_ATTEMPT: 2, H_SITE: "a"})
    await r.outcomes.settle(held, Result(Outcome.AMBIGUOUS, "timeout"), 1.0)
    [dead] = r.publisher.published
    _, verdict = dead.dead
    assert verdict["reason"] is DeadReason.ATTEMPTS_EXHAUSTED and verdict["attempts"] == 3
    assert [rec.status for rec in r.recorder.records] == [Status.DEAD]
    assert message.settled == ["ack"]


async def test_a_handed_back_job_counts_as_a_failover_only_when_its_site_fails() -> None:
    r = rooms()
    message, held = await _held(r, count=2)
    await r.outcomes.hand_back(held[0], failover=True)
    await r.outcomes.hand_back(held[1], failover=False)
    assert r.outcomes.totals.failed_over == 1
    assert message.settled == ["nack requeue=True"] and r.publisher.published == []


async def test_a_redelivered_job_marks_its_attempt_as_a_possible_duplicate() -> None:
    r = rooms()
    message = Message([make_job() for _ in range(2)], redelivered=True)
    held = await r.intake.hold(message.incoming(), "a")
    await r.outcomes.settle_all(held, [Result(Outcome.ACCEPTED, "ok")] * 2, 1.0)
    assert [rec.possible_duplicate for rec in r.recorder.records] == [True, True]
    assert all(rec.marks_duplicate for rec in r.recorder.records)


async def test_the_mark_waits_for_an_attempt_that_may_leave_a_copy() -> None:
    r = rooms(breaker_failure_threshold=10)
    _, [held] = await _held(r, headers={H_ATTEMPT: 0, H_POSSIBLE_DUPLICATE: True})
    await r.outcomes.settle(held, Result(Outcome.UNAVAILABLE, "refused"), 1.0)
    [record] = r.recorder.records
    assert not record.possible_duplicate  # nothing arrived: this attempt made no copy
    [retry] = r.publisher.published
    assert retry.headers[H_POSSIBLE_DUPLICATE] is True  # the job may still be at the platform from before
    # The next worker takes the retry and its attempt may leave a copy: that one carries the mark.
    after = rooms()
    retried = Message([held.job], headers=retry.headers)
    [again] = await after.intake.hold(retried.incoming(), "a")
    await after.outcomes.settle(again, Result(Outcome.ACCEPTED, "ok"), 1.0)
    assert [rec.possible_duplicate for rec in after.recorder.records] == [True]


async def test_a_refusal_or_an_expiry_of_a_marked_job_is_not_a_possible_duplicate() -> None:
    r = rooms()
    message = Message([make_job(), make_job(expires_at=1.0)], redelivered=True)
    refused, expired = await r.intake.hold(message.incoming(), "a")
    await r.outcomes.settle(refused, Result(Outcome.REJECTED, "no route"), 1.0)
    await r.outcomes.expire(expired)
    assert [rec.possible_duplicate for rec in r.recorder.records] == [False, False]


async def test_an_unmarked_job_is_not_a_possible_duplicate() -> None:
    r = rooms()
    _, held = await _held(r)
    await r.outcomes.settle_all(held, [Result(Outcome.ACCEPTED, "ok")], 1.0)
    assert [rec.possible_duplicate for rec in r.recorder.records] == [False]
