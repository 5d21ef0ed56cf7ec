"""Folds worker reports (attempt events and dead letters) into the store, one transaction per batch.

Redelivered reports change nothing twice: attempts are matched on (message, attempt, site, outcome, at)
and dead letters on the message id. A status only moves up in rank, so a late `retrying` never hides a
`delivered`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.model import AttemptRecord, DeadReason, Job, Outcome, Status
from shared.store.messages import row_for_job, utc
from shared.store.models import Attempt, DeadLetter, Message, utcnow

_RANK = {
    Status.ACCEPTED: 0,
    Status.RETRYING: 1,
    Status.REJECTED: 2,
    Status.EXPIRED: 2,
    Status.DEAD: 2,
    # A replayed dead letter that gets through is delivered after all.
    Status.DELIVERED: 3,
}

_STATUS_OF_REASON = {
    DeadReason.REJECTED: Status.REJECTED,
    DeadReason.EXPIRED: Status.EXPIRED,
    DeadReason.ATTEMPTS_EXHAUSTED: Status.DEAD,
    DeadReason.MALFORMED: Status.DEAD,
}

UNKNOWN_TENANT = ""  # placeholder rows: visible to no tenant until the submit's row fills them in


def status_rank(status: str) -> int:
    try:
        return _RANK[Status(status)]
    except ValueError:
        return -1


def promoted(current: str, new: Status) -> bool:
    """Whether `new` replaces `current`: only a higher rank does."""
    return _RANK[new] > status_rank(current)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadReport:
    job: Job
    site: str
    reason: DeadReason
    detail: str
    attempts: int

    @classmethod
    def from_envelope(cls, job: Job, verdict: dict[str, Any]) -> DeadReport:
        return cls(
            job=job,
            site=str(verdict.get("site", "")),
            reason=DeadReason(verdict["reason"]),
            detail=str(verdict.get("detail", "")),
            attempts=int(verdict.get("attempts", 0)),
        )


@dataclass(slots=True, kw_only=True)
class FoldResult:
    attempts_added: int = 0
    attempts_seen_before: int = 0
    dead_added: int = 0
    placeholders: int = 0
    statuses_changed: dict[str, str] = field(default_factory=dict)


def _attempt_key(message_id: str, attempt: int, site: str, outcome: str, at_s: float) -> tuple[Any, ...]:
    return (message_id, attempt, site, outcome, round(at_s, 3))


async def fold(session: AsyncSession, *, events: list[AttemptRecord], dead: list[DeadReport]) -> FoldResult:
    """Apply one batch of reports inside the caller's transaction."""
    result = FoldResult()
    ids = {r.message_id for r in events} | {d.job.id for d in dead}
    if not ids:
        return result
    messages = {m.id: m for m in (await session.scalars(select(Message).where(Message.id.in_(ids)))).all()}
    now = utcnow()

    for report in dead:
        if report.job.id not in messages:
            row = Message(**row_for_job(report.job, site=report.site))
            session.add(row)
            messages[row.id] = row
    for record in events:
        if record.message_id not in messages:
            row = Message(
                id=record.message_id,
                tenant=UNKNOWN_TENANT,
                to_number="",
                sender="",
                body="",
                site=record.site,
                status=Status.ACCEPTED.value,
                attempts=0,
                ambiguous=0,
                accepted_at=utc(record.at),
                updated_at=now,
                expires_at=utc(record.at),
            )
            session.add(row)
            messages[row.id] = row
            result.placeholders += 1

    event_ids = {r.message_id for r in events}
    seen: set[tuple[Any, ...]] = set()
    if event_ids:
        existing = await session.execute(
            select(Attempt.message_id, Attempt.attempt, Attempt.site, Attempt.outcome, Attempt.at).where(
                Attempt.message_id.in_(event_ids)
            )
        )
        seen = {_attempt_key(m, a, s, o, at.timestamp()) for m, a, s, o, at in existing}

    for record in events:
        key = _attempt_key(record.message_id, record.attempt, record.site, record.outcome, record.at)
        if key in seen:
            result.attempts_seen_before += 1
            continue
        seen.add(key)
        session.add(
            Attempt(
                message_id=record.message_id,
                site=record.site,
                attempt=record.attempt,
                outcome=record.outcome.value,
                detail=record.detail[:2000],
                at=utc(record.at),
                latency_ms=record.latency_ms,
                worker=record.worker[:128],
            )
        )
        result.attempts_added += 1
        message = messages[record.message_id]
        if record.outcome is not Outcome.EXPIRED:
            message.attempts = max(message.attempts or 0, record.attempt)
        if record.outcome is Outcome.AMBIGUOUS:
            message.ambiguous = (message.ambiguous or 0) + 1
        if record.status is not None and promoted(message.status, record.status):
            message.status = record.status.value
            result.statuses_changed[message.id] = message.status
        message.updated_at = now

    if dead:
        letters = {
            d.message_id: d
            for d in (
                await session.scalars(
                    select(DeadLetter).where(DeadLetter.message_id.in_({d.job.id for d in dead}))
                )
            ).all()
        }
        for report in dead:
            letter = letters.get(report.job.id)
            if letter is None:
                letter = DeadLetter(
                    message_id=report.job.id,
                    tenant=report.job.tenant,
                    site=report.site,
                    reason=report.reason.value,
                    detail=report.detail[:2000],
                    attempts=report.attempts,
                    job=asdict(report.job),
                    dead_at=now,
                    replay_count=0,
                )
                session.add(letter)
                letters[letter.message_id] = letter
                result.dead_added += 1
            elif letter.replayed_at is not None:
                # Replayed and dead again: it is a dead letter once more, its replay count kept.
                letter.site = report.site
                letter.reason = report.reason.value
                letter.detail = report.detail[:2000]
                letter.attempts = report.attempts
                letter.job = asdict(report.job)
                letter.dead_at = now
                letter.replayed_at = None
                result.dead_added += 1
            message = messages[report.job.id]
            if message.tenant == UNKNOWN_TENANT:
                _fill_placeholder(message, report)
            status = _STATUS_OF_REASON[report.reason]
            if promoted(message.status, status):
                message.status = status.value
                result.statuses_changed[message.id] = message.status
            message.attempts = max(message.attempts or 0, report.attempts)
            message.updated_at = now
    await session.flush()
    return result


def _fill_placeholder(message: Message, report: DeadReport) -> None:
    """A row the recorder made from an event alone gets the job's data from its dead letter."""
    full = row_for_job(report.job, site=report.site)
    for name in ("tenant", "to_number", "sender", "body", "client_reference", "segments", "encoding"):
        setattr(message, name, full[name])
    message.accepted_at = full["accepted_at"]
    message.expires_at = full["expires_at"]
