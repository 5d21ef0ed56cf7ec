"""Folds worker reports (attempt events and dead letters) into the store, one transaction per batch.

Each change is made by its statement, never read into Python, changed and written back: several
recorders (one per ingress replica) fold into one store at once, and reports arrive in any order.

- An attempt is inserted once: a unique index on (message, attempt, site, outcome, at) turns a
  redelivered report into nothing, and only the attempts inserted are counted.
- A message's status only moves up in rank (``CASE WHEN rank(new) > rank(stored)``): a late `retrying`
  never hides a `sent`, a late `sent` never hides a report's `delivered` or `undelivered`. `delivered`
  is final; `undelivered` gives way to it alone (another copy reached the handset), and the relay's own
  terminal statuses give way to `sent` (a replayed dead letter, or a second copy, that got through).
- A delivery report is inserted once (by its key: the same report sent again is counted, not applied
  again) and moves its message's status as an attempt event does, through the same statement.
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
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Integer, String, Table, bindparam, case, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.model import AttemptRecord, DeadReason, DeliveryReport, Job, Outcome, Status
from shared.store.dead_fold import DETAIL_CHARS, DeadReport, fold_dead
from shared.store.messages import MESSAGES, SUBMIT_COLUMNS, row_for_job, utc
from shared.store.models import Attempt, utcnow
from shared.store.refusals import fitted
from shared.store.report_rows import insert_reports
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
    Status.SENT: 3,
    Status.UNDELIVERED: 4,
    Status.DELIVERED: 5,
}

_STATUS_OF_REASON = {
    DeadReason.REJECTED: Status.REJECTED,
    DeadReason.EXPIRED: Status.EXPIRED,
    DeadReason.ATTEMPTS_EXHAUSTED: Status.DEAD,
    DeadReason.MALFORMED: Status.DEAD,
    DeadReason.REDELIVERY_LIMIT: Status.DEAD,
}

__all__ = ["DETAIL_CHARS", "DeadReport", "FoldResult", "fold", "promoted", "status_rank"]

UNKNOWN_TENANT = ""  # placeholder rows: visible to no tenant until a job or the submit's row fills them in
WORKER_CHARS = 128


def status_rank(status: str) -> int:
    try:
        return _RANK[Status(status)]
    except ValueError:
        return -1


def promoted(current: str, new: Status) -> bool:
    """Whether `new` replaces `current`: only a higher rank does."""
    return _RANK[new] > status_rank(current)


@dataclass(slots=True, kw_only=True)
class FoldResult:
    attempts_added: int = 0
    attempts_seen_before: int = 0
    possible_duplicates_added: int = 0
    dead_added: int = 0
    placeholders: int = 0
    reports_added: int = 0
    reports_seen_before: int = 0  # the same report again: counted, not applied twice
    reports_unmatched: int = 0  # kept, naming no message the store knew
    # The status changes this fold made, in message id order (callbacks are published from them).
    changes: list[StatusChange] = field(default_factory=list)


ATTEMPTS = cast(Table, Attempt.__table__)

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


def _changes_of(
    events: list[AttemptRecord], dead: list[DeadReport], reports: list[DeliveryReport], now_s: float
) -> dict[str, _Change]:
    changes: dict[str, _Change] = {}
    for delivery_report in reports:
        if delivery_report.message_id:
            # Its status waits for the report's insert: a report seen before moves nothing.
            changes.setdefault(
                delivery_report.message_id,
                _Change(site=delivery_report.site, at_s=delivery_report.received_at),
            )
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
    session: AsyncSession,
    *,
    events: list[AttemptRecord],
    dead: list[DeadReport],
    reports: list[DeliveryReport] | None = None,
    fit: bool = False,
) -> FoldResult:
    """Apply one batch of worker events, dead letters and platforms' delivery reports inside the caller's
    transaction. With `fit`, every row written is cut to its columns first
    (`shared.store.refusals.fitted`): the last try of a report the store refused."""
    result = FoldResult()
    reports = reports or []
    now = utcnow()
    changes = _changes_of(events, dead, reports, now.timestamp())
    keep: Fit = fitted if fit else _as_given
    if not changes:
        if reports:  # none names a message: kept as unmatched
            await _fold_reports(session, reports, changes, set(), keep, result)
        return result
    stored = await _make_rows(session, changes, keep, result, now)
    known = {message_id for message_id, row in stored.items() if row.tenant != UNKNOWN_TENANT}
    if events:
        await _fold_events(session, events, changes, keep, result)
    if dead:
        result.dead_added = await fold_dead(session, dead, keep, now)
    if reports:
        await _fold_reports(session, reports, changes, known, keep, result)
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
    already there filled in from a job. Returns what each row held before this fold (a placeholder's
    tenant is UNKNOWN_TENANT: its message is not known yet)."""
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


async def _fold_reports(
    session: AsyncSession,
    reports: list[DeliveryReport],
    changes: dict[str, _Change],
    known: set[str],
    keep: Fit,
    result: FoldResult,
) -> None:
    inserted = await insert_reports(session, reports, known=known, keep=keep)
    for row in inserted:
        if not row.matched:
            result.reports_unmatched += 1
        status, report = row.state.status, row.report
        if report.message_id and status is not None:
            error = (report.error_code, report.platform_status) if report.error_code else None
            changes[report.message_id].rise_to(
                status, at=report.at or report.received_at, site=report.site, error=error
            )
    result.reports_added = len(inserted)
    result.reports_seen_before = len(reports) - len(inserted)


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
