"""What a parked message becomes in the store.

The broker moves a message to <prefix>.parked once a quorum queue has redelivered it `broker.delivery_limit`
times (a worker or recorder that kept crashing or handing it back). The recorder consumes
that queue with its own and folds what it finds there, by the body:

- attempt events, dead letters and delivery reports are folded as if they came from their own queue
  (the fold ignores what it has seen before);
- a job, or each job of a bundle, becomes a dead letter with reason `redelivery-limit`, which an operator
  sees in `relay dead list` and can replay.
"""

from __future__ import annotations

import contextlib

from aio_pika.abc import AbstractIncomingMessage

from shared.envelope import H_ATTEMPT, H_SITE, decode_dead, decode_events, decode_jobs, decode_reports
from shared.errors import EnvelopeError
from shared.model import AttemptRecord, DeadReason, DeliveryReport, Job, new_message_id
from shared.store.recording import DeadReport

MESSAGE_ID_CHARS = 32


Parked = tuple[list[AttemptRecord], list[DeadReport], list[DeliveryReport]]


def parked_reports(message: AbstractIncomingMessage) -> Parked:
    """The events, dead letters and delivery reports a parked message stands for; never raises for its
    body."""
    body = message.body
    with contextlib.suppress(EnvelopeError):
        return decode_events(body), [], []
    with contextlib.suppress(EnvelopeError):
        job, verdict = decode_dead(body)
        return [], [DeadReport.from_envelope(job, verdict)], []
    with contextlib.suppress(EnvelopeError):
        return [], [], decode_reports(body)
    headers = message.headers or {}
    queue = _text(headers.get("x-first-death-queue")) or "?"
    detail = f"delivered more than the broker's delivery limit from {queue} without an outcome"
    try:
        jobs = decode_jobs(body)
    except EnvelopeError as exc:
        jobs = [_placeholder_job(message)]
        detail += f"; not a job: {exc}"
    # Jobs are routed by site: the routing key survives dead-lettering.
    site = _text(headers.get(H_SITE)) or message.routing_key or ""
    attempts = headers.get(H_ATTEMPT)
    dead = [
        DeadReport(
            job=job,
            site=site,
            reason=DeadReason.REDELIVERY_LIMIT,
            detail=detail,
            attempts=attempts if isinstance(attempts, int) else 0,
        )
        for job in jobs
    ]
    return [], dead, []


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _placeholder_job(message: AbstractIncomingMessage) -> Job:
    """A job that keeps an unreadable body whole in the dead-letter store, so an operator can see it."""
    return Job(
        id=(message.message_id or new_message_id())[:MESSAGE_ID_CHARS],
        tenant="",
        to="",
        sender="",
        body=message.body.decode("utf-8", "replace"),
        expires_at=0.0,
    )
