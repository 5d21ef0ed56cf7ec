"""The messages table: the row written at submit, and the status view the API answers with."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache
from typing import Any, cast

from sqlalchemy import Connection, Table, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from shared.model import Job, Outcome, Status
from shared.store.models import Attempt, Message
from shared.store.report_rows import ReportView, reports_of
from shared.store.upsert import dialect_insert

MESSAGES = cast(Table, Message.__table__)

# Columns a submit knows; status, attempts and ambiguous belong to the recorder, which may have
# written a placeholder row first when a worker reported faster than the submit's commit.
SUBMIT_COLUMNS = (
    "tenant",
    "to_number",
    "sender",
    "body",
    "client_reference",
    "segments",
    "encoding",
    "site",
    "accepted_at",
    "expires_at",
    "callback_url",
)


def utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def row_for_job(job: Job, *, site: str, status: Status = Status.ACCEPTED) -> dict[str, Any]:
    """The messages row of a job as it is accepted."""
    accepted_at = utc(job.accepted_at)
    return {
        "id": job.id,
        "tenant": job.tenant,
        "to_number": job.to,
        "sender": job.sender,
        "body": job.body,
        "client_reference": job.reference,
        "segments": job.segments,
        "encoding": job.encoding,
        "site": site,
        "status": status.value,
        "attempts": 0,
        "ambiguous": 0,
        "accepted_at": accepted_at,
        "updated_at": accepted_at,
        "expires_at": utc(job.expires_at),
        "callback_url": job.callback_url,
    }


@cache
def submitted_upsert(dialect_name: str) -> Any:
    """INSERT of accepted messages' rows; an existing row keeps the status the recorder gave it.

    Core on the table, not the ORM's bulk path, which costs more CPU per row than the fsync it shares.
    """
    stmt = dialect_insert(dialect_name, MESSAGES)
    return stmt.on_conflict_do_update(
        index_elements=["id"], set_={name: stmt.excluded[name] for name in SUBMIT_COLUMNS}
    )


async def insert_submitted(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    if rows:
        await session.execute(submitted_upsert(session.get_bind().dialect.name), rows)


def insert_submitted_sync(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """The same upsert on SQLite's writer thread (`shared.store.engine`, SQLite only), as one
    multi-row statement of the driver's own values.

    The writer thread needs the GIL back after every SQLite call, and while the submits' event loop is busy
    each hand-back can wait out Python's switch interval: `executemany` (one step per row) and
    SQLAlchemy's per-row parameter processing made a group commit slower than the broker's confirm, so
    submits waited for the store. One statement per commit needs a handful of hand-backs. Datetimes are
    rendered as SQLAlchemy's SQLite DATETIME stores them.
    """
    if not rows:
        return
    head, values, tail, names = _sqlite_upsert()
    per_statement = max(1, _SQLITE_MAX_VARIABLES // len(names))
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        parameters = tuple(
            sqlite_datetime(v) if isinstance(v, datetime) else v
            for row in chunk
            for v in map(row.__getitem__, names)
        )
        connection.exec_driver_sql(f"{head} VALUES {', '.join([values] * len(chunk))}{tail}", parameters)


# SQLite before 3.32 allowed 999 parameters in a statement, later versions 32,766.
_SQLITE_MAX_VARIABLES = 32_766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


@cache
def _sqlite_upsert() -> tuple[str, str, str, tuple[str, ...]]:
    """The compiled upsert cut around its one row of values: head, ``(?, ...)``, tail, parameter names."""
    compiled = submitted_upsert("sqlite").compile(dialect=sqlite.dialect())
    assert compiled.positiontup is not None
    sql = compiled.string
    head, _, rest = sql.partition(" VALUES ")
    values, _, tail = rest.partition(")")
    return head, values + ")", tail, tuple(compiled.positiontup)


@lru_cache(maxsize=4096)
def sqlite_datetime(value: datetime) -> str:
    """A UTC datetime as SQLAlchemy's SQLite DATETIME type stores it.

    Cached: the rows of one submit share their accepted and updated times, and often their expiry."""
    v = value.astimezone(UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d} "
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptView:
    site: str
    attempt: int
    outcome: str
    detail: str
    at: datetime
    latency_ms: float | None
    resent: bool  # a send of a job that may have been sent before

    @property
    def possible_duplicate(self) -> bool:
        return self.resent or self.outcome == Outcome.AMBIGUOUS


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageView:
    id: str
    tenant: str
    status: str
    site: str
    to_number: str
    sender: str
    client_reference: str | None
    segments: int
    encoding: str
    attempts: int
    ambiguous: int
    accepted_at: datetime
    updated_at: datetime
    expires_at: datetime
    history: list[AttemptView]
    reports: list[ReportView]


async def get_message(session: AsyncSession, *, message_id: str, tenant: str) -> MessageView | None:
    """The message and its attempts, or None when it does not exist or is another tenant's."""
    row = await session.get(Message, message_id)
    if row is None or row.tenant != tenant:
        return None
    attempts = (
        await session.scalars(
            select(Attempt).where(Attempt.message_id == message_id).order_by(Attempt.at, Attempt.id)
        )
    ).all()
    return MessageView(
        id=row.id,
        tenant=row.tenant,
        status=row.status,
        site=row.site,
        to_number=row.to_number,
        sender=row.sender,
        client_reference=row.client_reference,
        segments=row.segments,
        encoding=row.encoding,
        attempts=row.attempts,
        ambiguous=row.ambiguous,
        accepted_at=row.accepted_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
        history=[
            AttemptView(
                site=a.site,
                attempt=a.attempt,
                outcome=a.outcome,
                detail=a.detail,
                at=a.at,
                latency_ms=a.latency_ms,
                resent=a.possible_duplicate,
            )
            for a in attempts
        ],
        reports=await reports_of(session, message_id),
    )
