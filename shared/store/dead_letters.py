"""Store queries behind `relay dead`: read, claim for replay, purge and stream dead letters."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, exists, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import NotFound
from shared.model import Status
from shared.store.models import Attempt, DeadLetter, Message, utcnow
from shared.store.report_rows import ReportView, reports_of

# Rows claimed, published and written back per transaction by a bulk replay, and rows per fetch when
# exporting: enough to amortise an fsync, small enough to keep memory flat.
PAGE_SIZE = 500


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadFilter:
    """Which dead letters a command acts on; every field left None matches all."""

    site: str | None = None
    reason: str | None = None
    tenant: str | None = None
    since: datetime | None = None  # dead at or after
    before: datetime | None = None  # dead strictly before (purge's --older-than)
    replayed: bool | None = None  # True: only replayed ones; False: only never replayed

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.site is not None:
            found.append(DeadLetter.site == self.site)
        if self.reason is not None:
            found.append(DeadLetter.reason == self.reason)
        if self.tenant is not None:
            found.append(DeadLetter.tenant == self.tenant)
        if self.since is not None:
            found.append(DeadLetter.dead_at >= self.since)
        if self.before is not None:
            found.append(DeadLetter.dead_at < self.before)
        if self.replayed is True:
            found.append(DeadLetter.replayed_at.is_not(None))
        elif self.replayed is False:
            found.append(DeadLetter.replayed_at.is_(None))
        return found

    def apply(self, stmt: Select[Any]) -> Select[Any]:
        return stmt.where(*self.conditions())


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadDetail:
    dead: DeadLetter
    message: Message | None
    attempts: list[Attempt]
    # Platforms' delivery reports of the message: an ambiguous attempt may have reached the handset.
    reports: list[ReportView] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayClaim:
    """A dead letter an operator has claimed for replay, with what to restore if the publish fails."""

    message_id: str
    job: dict[str, Any]
    to_site: str
    replay_number: int
    previous_replayed_at: datetime | None
    previous_to_site: str | None
    previous_status: str | None
    previous_expires_at: datetime | None


async def list_dead(session: AsyncSession, dead_filter: DeadFilter, *, limit: int) -> list[DeadLetter]:
    stmt = dead_filter.apply(select(DeadLetter)).order_by(DeadLetter.dead_at.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())


async def counts_by_reason(session: AsyncSession, dead_filter: DeadFilter) -> dict[str, int]:
    stmt = (
        select(DeadLetter.reason, func.count()).where(*dead_filter.conditions()).group_by(DeadLetter.reason)
    )
    return {reason: count for reason, count in (await session.execute(stmt)).all()}


async def count(session: AsyncSession, dead_filter: DeadFilter) -> int:
    stmt = dead_filter.apply(select(func.count()).select_from(DeadLetter))
    return int((await session.execute(stmt)).scalar_one())


async def get_detail(session: AsyncSession, message_id: str) -> DeadDetail:
    dead = await session.get(DeadLetter, message_id)
    if dead is None:
        raise NotFound(f"no dead letter with id {message_id!r}")
    message = await session.get(Message, message_id)
    attempts = (
        await session.scalars(
            select(Attempt).where(Attempt.message_id == message_id).order_by(Attempt.at, Attempt.id)
        )
    ).all()
    return DeadDetail(
        dead=dead, message=message, attempts=list(attempts), reports=await reports_of(session, message_id)
    )


async def get_many(session: AsyncSession, message_ids: Sequence[str]) -> list[DeadLetter]:
    """The dead letters of these ids, in the order given; `NotFound` names every id that is missing."""
    found: dict[str, DeadLetter] = {}
    for start in range(0, len(message_ids), PAGE_SIZE):
        chunk = list(message_ids[start : start + PAGE_SIZE])
        rows = await session.scalars(select(DeadLetter).where(DeadLetter.message_id.in_(chunk)))
        found.update({row.message_id: row for row in rows})
    missing = [mid for mid in message_ids if mid not in found]
    if missing:
        raise NotFound(f"no dead letter with id {', '.join(missing)}")
    return [found[mid] for mid in message_ids]


async def page_ids(
    session: AsyncSession, dead_filter: DeadFilter, *, after: str | None, limit: int
) -> list[str]:
    """Ids matching the filter in id order, after ``after``: a stable walk over any number of rows."""
    stmt = dead_filter.apply(select(DeadLetter.message_id))
    if after is not None:
        stmt = stmt.where(DeadLetter.message_id > after)
    stmt = stmt.order_by(DeadLetter.message_id).limit(limit)
    return list((await session.scalars(stmt)).all())


async def claim(
    session: AsyncSession, rows: Sequence[DeadLetter], *, to_site: str | None, force: bool
) -> list[ReplayClaim]:
    """Mark these rows replayed, in the caller's transaction, with one UPDATE for the whole page.

    The UPDATE matches each row only with the replay count read just before, so two operators replaying
    the same id at once cannot both win; a row replayed already is skipped unless ``force``.
    """
    candidates = [row for row in rows if force or row.replayed_at is None]
    if not candidates:
        return []
    claimed = set(
        (
            await session.scalars(
                update(DeadLetter)
                .where(
                    tuple_(DeadLetter.message_id, DeadLetter.replay_count).in_(
                        [(row.message_id, row.replay_count) for row in candidates]
                    )
                )
                .values(
                    replayed_at=utcnow(),
                    replay_count=DeadLetter.replay_count + 1,
                    replayed_to_site=to_site if to_site is not None else DeadLetter.site,
                )
                .returning(DeadLetter.message_id)
                .execution_options(synchronize_session=False)
            )
        ).all()
    )
    messages = {
        message.id: message
        for message in (
            await session.execute(
                select(Message.id, Message.status, Message.expires_at).where(Message.id.in_(claimed))
            )
        ).all()
    }
    claims = []
    for row in candidates:
        if row.message_id not in claimed:
            continue
        message = messages.get(row.message_id)
        claims.append(
            ReplayClaim(
                message_id=row.message_id,
                job=dict(row.job),
                to_site=to_site or row.site,
                replay_number=row.replay_count + 1,
                previous_replayed_at=row.replayed_at,
                previous_to_site=row.replayed_to_site,
                previous_status=message.status if message is not None else None,
                previous_expires_at=message.expires_at if message is not None else None,
            )
        )
    return claims


async def mark_messages_accepted(session: AsyncSession, expiry_by_id: Mapping[str, datetime]) -> None:
    """Set the messages of these claims back to `accepted`, with their (maybe fresh) expiry; one
    executemany for the page. Ids without a message row are left out: there is nothing to update."""
    if not expiry_by_id:
        return
    existing = (await session.scalars(select(Message.id).where(Message.id.in_(list(expiry_by_id))))).all()
    if not existing:
        return
    now = utcnow()
    await session.execute(
        update(Message),
        [
            {"id": mid, "status": Status.ACCEPTED.value, "expires_at": expiry_by_id[mid], "updated_at": now}
            for mid in existing
        ],
    )


async def unclaim(session: AsyncSession, claims: Sequence[ReplayClaim]) -> None:
    """Undo `claim` for replays whose publish failed, so they can be replayed again without --force."""
    for item in claims:
        await session.execute(
            update(DeadLetter)
            .where(DeadLetter.message_id == item.message_id, DeadLetter.replay_count == item.replay_number)
            .values(
                replayed_at=item.previous_replayed_at,
                replay_count=item.replay_number - 1,
                replayed_to_site=item.previous_to_site,
            )
            .execution_options(synchronize_session=False)
        )
        if item.previous_status is not None and item.previous_expires_at is not None:
            await session.execute(
                update(Message)
                .where(Message.id == item.message_id)
                .values(status=item.previous_status, expires_at=item.previous_expires_at, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )


async def purge(session: AsyncSession, dead_filter: DeadFilter) -> int:
    result = await session.execute(
        delete(DeadLetter).where(*dead_filter.conditions()).execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def stream(session: AsyncSession, dead_filter: DeadFilter) -> AsyncIterator[DeadLetter]:
    """Every matching row, fetched PAGE_SIZE at a time through a server-side cursor: flat memory."""
    stmt = dead_filter.apply(select(DeadLetter)).order_by(DeadLetter.dead_at, DeadLetter.message_id)
    result = await session.stream_scalars(stmt.execution_options(yield_per=PAGE_SIZE))
    async for row in result:
        yield row
        # Rows already written are not needed again; keep the identity map from growing with the export.
        session.expunge(row)


async def has_site(session: AsyncSession, site: str) -> bool:
    """Whether any dead letter died at this site (an indexed lookup, whatever the table's size)."""
    return bool((await session.execute(select(exists().where(DeadLetter.site == site)))).scalar())
