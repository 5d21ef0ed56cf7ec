"""The messages table: the row written at submit, and the status view the API answers with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.model import Job, Outcome, Status
from shared.store.models import Attempt, Message
from shared.store.upsert import insert_for

# Columns a submit knows; status, attempts and ambiguous belong to the recorder, which may have
# written a placeholder row first when a worker reported faster than the submit's commit.
_SUBMIT_COLUMNS = (
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
    }


async def insert_submitted(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Write the rows of accepted messages; an existing row keeps the status the recorder gave it."""
    if not rows:
        return
    stmt = insert_for(session, Message)
    stmt = stmt.on_conflict_do_update(
        index_elements=[Message.id], set_={name: stmt.excluded[name] for name in _SUBMIT_COLUMNS}
    )
    await session.execute(stmt, rows)


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptView:
    site: str
    attempt: int
    outcome: str
    detail: str
    at: datetime
    latency_ms: float | None

    @property
    def possible_duplicate(self) -> bool:
        return self.outcome == Outcome.AMBIGUOUS


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
            )
            for a in attempts
        ],
    )
