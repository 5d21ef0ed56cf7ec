"""Folds worker reports (attempt events and dead letters) into the store, one transaction per batch.

Each change is made by its statement, never read into Python, changed and written back: several
recorders (one per ingress replica) fold into one store at once, and reports arrive in any order.

- An attempt is inserted once: a unique index on (message, attempt, site, outcome, at) turns a
  redelivered report into nothing, and only the attempts inserted are counted.
- A message's status only moves up in rank (``CASE WHEN rank(new) > rank(stored)``): a late `retrying`
  never hides a `delivered`. `delivered` is final; the other terminal statuses give way to it alone (a
  replayed dead letter, or a second copy, that got through).
- Its attempt count is the highest reported, and its possible duplicates grow by the attempts inserted
  (``ambiguous = ambiguous + :n``), so no recorder's count is lost to another's.
- A dead letter is inserted once; a replayed one that dies again is renewed.

A message with no row yet (its submit row still pending, or lost with an ingress killed before its group
commit) gets one from the job the report carries, or, from a report without one, a placeholder visible to
no tenant until a job or the submit's row fills it in.

Core statements, a handful per batch, not the ORM: every delivered message brings one report, and the
ORM's unit of work cost about a fifth of the ingress's CPU in the end-to-end benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Integer, String, Table, bindparam, case, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.model import AttemptRecord, DeadReason, Job, Outcome, Status
from shared.store.messages import MESSAGES, SUBMIT_COLUMNS, row_for_job, utc
from shared.store.models import Attempt, DeadLetter, utcnow
from shared.store.refusals import fitted
from shared.store.status_changes import (
    StatusChange,
    Stored,
    applied_changes,
    filled,
    read_stored,
    with_default_urls,
)
from shared.store.upsert import dialect_insert

_RANK = {
    Status.ACCEPTED: 0,
    Status.RETRYING: 1,
    Status.REJECTED: 2,
    Status.EXPIRED: 2,
    Status.DEAD: 2,
    Status.DELIVERED: 3,
}

_STATUS_OF_REASON = {
    DeadReason.REJECTED: Status.REJECTED,
    DeadReason.EXPIRED: Status.EXPIRED,
    DeadReason.ATTEMPTS_EXHAUSTED: Status.DEAD,
    DeadReason.MALFORMED: Status.DEAD,
    DeadReason.REDELIVERY_LIMIT: Status.DEAD,
}

UNKNOWN_TENANT = ""  # placeholder rows: visible to no tenant until a job or the submit's row fills them in
DETAIL_CHARS = 2000
WORKER_CHARS = 128


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
    possible_duplicates_added: int = 0
    dead_added: int = 0
    placeholders: int = 0
    # The status changes this fold made, in message id order (callbacks are published from them).
    changes: list[StatusChange] = field(default_factory=list)


ATTEMPTS = cast(Table, Attempt.__table__)
DEAD_LETTERS = cast(Table, DeadLetter.__table__)

_REPORT_KEY = ("message_id", "attempt", "site", "outcome", "at")
# The columns of a messages row a job fills in when the recorder made the row as a placeholder.
_JOB_COLUMNS = tuple(name for name in SUBMIT_COLUMNS if name != "site")
_INT32_MAX = 2**31 - 1

Fit = Callable[[Table, dict[str, Any]], dict[str, Any]]


def _as_given(_: Table, row: dict[str, Any]) -> dict[str, Any]:
    return row


@dataclass(slots=True)
class _Change:
    """What one batch does to one messages row."""

    site: str
    at_s: float
    job: Job | None = None
    rank: int = -1
    status: str | None = None
    attempts: int = 0
    ambiguous: int = 0
    status_at: float = 0.0
    status_site: str = ""
    error: tuple[str, str] | None = None  # (code, the platform's text) of the report that set the status

    def rise_to(self, status: Status, *, at: float, site: str, error: tuple[str, str] | None) -> None:
        if _RANK[status] > self.rank:
            self.rank, self.status = _RANK[status], status.value
            self.status_at, self.status_site, self.error = at, site, error


@cache
def _insert_new_messages(dialect_name: str) -> Any:
    # A submit's row, or another recorder's, may land between this batch's read and its write: that wins.
    return dialect_insert(dialect_name, MESSAGES).on_conflict_do_nothing(index_elements=["id"])


@cache
def _insert_attempts(dialect_name: str) -> Any:
    return (
        dialect_insert(dialect_name, ATTEMPTS)
        .on_conflict_do_nothing(index_elements=list(_REPORT_KEY))
        .returning(
            ATTEMPTS.c.message_id, ATTEMPTS.c.attempt, ATTEMPTS.c.outcome, ATTEMPTS.c.possible_duplicate
        )
    )


@cache
def _insert_dead_letters(dialect_name: str) -> Any:
    return dialect_insert(dialect_name, DEAD_LETTERS).on_conflict_do_nothing(index_elements=["message_id"])


_STORED_RANK = case({s.value: rank for s, rank in _RANK.items()}, value=MESSAGES.c.status, else_=-1)
_NEW_ATTEMPTS = bindparam("b_attempts", type_=Integer)
_UPDATE_MESSAGES = (
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("b_id"))
    .values(
        status=case(
            (bindparam("b_rank", type_=Integer) > _STORED_RANK, bindparam("b_status", type_=String)),
            else_=MESSAGES.c.status,
        ),
        attempts=case((MESSAGES.c.attempts < _NEW_ATTEMPTS, _NEW_ATTEMPTS), else_=MESSAGES.c.attempts),
        ambiguous=MESSAGES.c.ambiguous + bindparam("b_ambiguous", type_=Integer),
        updated_at=bindparam("b_updated_at", type_=MESSAGES.c.updated_at.type),
    )
)

# A placeholder's columns from a job; a row of a submit or a job already there is left alone.
_FILL_PLACEHOLDERS = (
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("b_id"), MESSAGES.c.tenant == UNKNOWN_TENANT)
    .values({name: bindparam(f"b_{name}", type_=MESSAGES.c[name].type) for name in _JOB_COLUMNS})
)

_RENEW_DEAD_LETTERS = (
    update(DEAD_LETTERS)
    .where(DEAD_LETTERS.c.message_id == bindparam("b_message_id"), DEAD_LETTERS.c.replayed_at.is_not(None))
    .values(
        site=bindparam("b_site"),
        reason=bindparam("b_reason"),
        detail=bindparam("b_detail"),
        attempts=bindparam("b_attempts"),
        job=bindparam("b_job", type_=DEAD_LETTERS.c.job.type),
        dead_at=bindparam("b_dead_at", type_=DEAD_LETTERS.c.dead_at.type),
        replayed_at=None,
    )
)


def _placeholder(message_id: str, change: _Change, now: datetime) -> dict[str, Any]:
    """A row for a message known only by a report without its job: visible to no tenant."""
    return {
        "id": message_id,
        "tenant": UNKNOWN_TENANT,
        "to_number": "",
        "sender": "",
        "body": "",
        "client_reference": None,
        "segments": 1,
        "encoding": "gsm7",
        "site": change.site,
        "status": Status.ACCEPTED.value,
        "attempts": 0,
        "ambiguous": 0,
        "accepted_at": utc(change.at_s),
        "updated_at": now,
        "expires_at": utc(change.at_s),
        "callback_url": None,
    }


def _changes_of(events: list[AttemptRecord], dead: list[DeadReport], now_s: float) -> dict[str, _Change]:
    changes: dict[str, _Change] = {}
    for report in dead:
        change = changes.setdefault(report.job.id, _Change(site=report.site, at_s=report.job.accepted_at))
        change.job = change.job or report.job
        error = (report.reason.value, report.detail)
        change.rise_to(_STATUS_OF_REASON[report.reason], at=now_s, site=report.site, error=error)
        change.attempts = max(change.attempts, report.attempts)
    for record in events:
        change = changes.setdefault(record.message_id, _Change(site=record.site, at_s=record.at))
        change.job = change.job or record.job
        if record.status is not None:
            failed = record.outcome is not Outcome.ACCEPTED
            change.rise_to(
                record.status,
                at=record.at,
                site=record.site,
                error=(record.outcome.value, record.detail) if failed else None,
            )
    return changes


async def fold(
    session: AsyncSession, *, events: list[AttemptRecord], dead: list[DeadReport], fit: bool = False
) -> FoldResult:
    """Apply one batch of reports inside the caller's transaction. With `fit`, every row written is cut
    to its columns first (`shared.store.refusals.fitted`): the last try of a report the store refused."""
    result = FoldResult()
    now = utcnow()
    changes = _changes_of(events, dead, now.timestamp())
    if not changes:
        return result
    keep: Fit = fitted if fit else _as_given
    stored = await _make_rows(session, changes, keep, result, now)
    if events:
        await _fold_events(session, events, changes, keep, result)
    if dead:
        await _fold_dead(session, dead, keep, result, now)
    updates = [
        {
            "b_id": message_id,
            "b_rank": change.rank,
            "b_status": change.status,
            "b_attempts": min(change.attempts, _INT32_MAX),
            "b_ambiguous": change.ambiguous,
            "b_updated_at": now,
        }
        # In one order in every recorder, so two folding at once wait for each other, never deadlock.
        for message_id, change in sorted(changes.items())
        if change.rank >= 0 or change.attempts or change.ambiguous
    ]
    if updates:
        await session.execute(_UPDATE_MESSAGES, updates)
    applied = applied_changes(sorted(changes.items()), stored, status_rank)
    result.changes = await with_default_urls(session, applied) if applied else applied
    return result


async def _make_rows(
    session: AsyncSession, changes: dict[str, _Change], keep: Fit, result: FoldResult, now: datetime
) -> dict[str, Stored]:
    """A row for every message of the batch: new ones from their job (or as placeholders), placeholders
    already there filled in from a job. Returns what each row held before this fold."""
    stored = await read_stored(session, changes)
    new_rows: list[dict[str, Any]] = []
    fills: list[dict[str, Any]] = []
    for message_id, change in sorted(changes.items()):
        if message_id not in stored:
            if change.job is not None:
                new_rows.append(keep(MESSAGES, row_for_job(change.job, site=change.site)))
                stored[message_id] = Stored.of_job(change.job)
            else:
                new_rows.append(keep(MESSAGES, _placeholder(message_id, change, now)))
                stored[message_id] = Stored(tenant=UNKNOWN_TENANT, status=Status.ACCEPTED.value)
                result.placeholders += 1
        elif stored[message_id].tenant == UNKNOWN_TENANT and change.job is not None:
            row = keep(MESSAGES, row_for_job(change.job, site=change.site))
            fills.append({"b_id": message_id, **{f"b_{name}": row[name] for name in _JOB_COLUMNS}})
            stored[message_id] = filled(stored[message_id], change.job)
    if new_rows:
        await session.execute(_insert_new_messages(session.get_bind().dialect.name), new_rows)
    if fills:
        await session.execute(_FILL_PLACEHOLDERS, fills)
    return stored


async def _fold_events(
    session: AsyncSession,
    events: list[AttemptRecord],
    changes: dict[str, _Change],
    keep: Fit,
    result: FoldResult,
) -> None:
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for record in events:
        row = keep(
            ATTEMPTS,
            {
                "message_id": record.message_id,
                "site": record.site,
                "attempt": record.attempt,
                "outcome": record.outcome.value,
                "detail": record.detail[:DETAIL_CHARS],
                "at": utc(record.at),
                "latency_ms": record.latency_ms,
                "worker": record.worker[:WORKER_CHARS],
                "possible_duplicate": record.possible_duplicate,
            },
        )
        rows.setdefault(tuple(row[name] for name in _REPORT_KEY), row)
    inserted = await session.execute(
        _insert_attempts(session.get_bind().dialect.name), [rows[key] for key in sorted(rows)]
    )
    added = 0
    for message_id, attempt, outcome, possible_duplicate in inserted:
        added += 1
        change = changes[message_id]
        if outcome != Outcome.EXPIRED:
            change.attempts = max(change.attempts, attempt)
        if possible_duplicate or outcome == Outcome.AMBIGUOUS:
            change.ambiguous += 1
            result.possible_duplicates_added += 1
    result.attempts_added = added
    result.attempts_seen_before = len(events) - added


async def _fold_dead(
    session: AsyncSession, dead: list[DeadReport], keep: Fit, result: FoldResult, now: datetime
) -> None:
    found = await session.execute(
        select(DEAD_LETTERS.c.message_id, DEAD_LETTERS.c.replayed_at).where(
            DEAD_LETTERS.c.message_id.in_({d.job.id for d in dead})
        )
    )
    # message id -> replayed_at (None: dead and not replayed)
    replayed: dict[str, datetime | None] = dict(found.all())
    new_letters: list[dict[str, Any]] = []
    renewed: list[dict[str, Any]] = []
    for report in sorted(dead, key=lambda d: d.job.id):
        job_id = report.job.id
        letter = keep(
            DEAD_LETTERS,
            {
                "message_id": job_id,
                "tenant": report.job.tenant,
                "site": report.site,
                "reason": report.reason.value,
                "detail": report.detail[:DETAIL_CHARS],
                "attempts": report.attempts,
                "job": asdict(report.job),  # whole, as it travelled: a replay needs nothing else
                "dead_at": now,
            },
        )
        if job_id not in replayed:
            new_letters.append({**letter, "replay_count": 0})
        elif replayed[job_id] is not None:
            # Replayed and dead again: it is a dead letter once more, its replay count kept.
            renewed.append({f"b_{name}": value for name, value in letter.items() if name != "tenant"})
        else:
            continue
        replayed[job_id] = None
        result.dead_added += 1
    if new_letters:
        await session.execute(_insert_dead_letters(session.get_bind().dialect.name), new_letters)
    if renewed:
        await session.execute(_RENEW_DEAD_LETTERS, renewed)
