"""Tenants' callback settings (default URL, signing secrets) and the callbacks that died.

A tenant's signing secret is stored as printed: the callback worker needs it to sign. After a rotation
the previous one keeps signing beside it until `previous_until`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import JSON, Integer, String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.callbacks.signing import new_secret
from shared.errors import NotFound
from shared.store.models import Base, utcnow


class TenantCallback(Base):
    __tablename__ = "tenant_callbacks"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    callback_url: Mapped[str | None] = mapped_column(String(2048), default=None)
    secret: Mapped[str | None] = mapped_column(String(128), default=None)
    previous_secret: Mapped[str | None] = mapped_column(String(128), default=None)
    previous_until: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CallbackDeadLetter(Base):
    """A callback that kept failing (or was refused at send time), kept for `relay dead --kind callback`."""

    __tablename__ = "callback_dead_letters"

    event_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(32), index=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(32), index=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    job: Mapped[dict[str, Any]] = mapped_column(JSON)  # the callback job whole: a replay needs nothing else
    dead_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    replayed_at: Mapped[datetime | None] = mapped_column(default=None)
    replay_count: Mapped[int] = mapped_column(Integer, default=0)


async def _row(session: AsyncSession, tenant: str) -> TenantCallback:
    row = await session.get(TenantCallback, tenant, with_for_update=True)
    if row is None:
        row = TenantCallback(tenant=tenant)
        session.add(row)
    return row


async def signing_secret(session: AsyncSession, *, tenant: str, rotate: bool, overlap_s: int) -> str:
    """The tenant's signing secret, made the first time; with `rotate` a new one, the old one signing
    beside it for `overlap_s` more."""
    row = await _row(session, tenant)
    if row.secret is None or rotate:
        if row.secret is not None:
            row.previous_secret = row.secret
            row.previous_until = utcnow() + timedelta(seconds=overlap_s)
        row.secret = new_secret()
        row.updated_at = utcnow()
    return row.secret


async def set_default_url(session: AsyncSession, *, tenant: str, url: str | None) -> None:
    row = await _row(session, tenant)
    row.callback_url = url
    row.updated_at = utcnow()


async def secrets_in_force(session: AsyncSession, tenant: str) -> list[str]:
    """The secrets a callback of `tenant` is signed with now, current first; empty when it has none."""
    row = await session.get(TenantCallback, tenant)
    if row is None or row.secret is None:
        return []
    found = [row.secret]
    if row.previous_secret and row.previous_until is not None and row.previous_until > utcnow():
        found.append(row.previous_secret)
    return found


async def default_urls(session: AsyncSession, tenants: set[str]) -> dict[str, str]:
    if not tenants:
        return {}
    rows = await session.execute(
        select(TenantCallback.tenant, TenantCallback.callback_url).where(
            TenantCallback.tenant.in_(tenants), TenantCallback.callback_url.is_not(None)
        )
    )
    return {tenant: url for tenant, url in rows.all() if url}


async def all_default_urls(session: AsyncSession) -> dict[str, str]:
    rows = await session.execute(select(TenantCallback.tenant, TenantCallback.callback_url))
    return {tenant: url for tenant, url in rows.all() if url}


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadCallback:
    event_id: str
    message_id: str
    tenant: str
    url: str
    status: str
    reason: str
    detail: str
    attempts: int
    job: dict[str, Any]
    dead_at: datetime
    replayed_at: datetime | None
    replay_count: int


def _view(row: CallbackDeadLetter) -> DeadCallback:
    return DeadCallback(
        event_id=row.event_id,
        message_id=row.message_id,
        tenant=row.tenant,
        url=row.url,
        status=row.status,
        reason=row.reason,
        detail=row.detail,
        attempts=row.attempts,
        job=row.job,
        dead_at=row.dead_at,
        replayed_at=row.replayed_at,
        replay_count=row.replay_count,
    )


async def record_dead_callback(
    session: AsyncSession, *, job: dict[str, Any], reason: str, detail: str, attempts: int
) -> None:
    """Keep a callback that died; one that died before (a replay that failed again) is renewed."""
    row = await session.get(CallbackDeadLetter, job["event_id"], with_for_update=True)
    if row is None:
        row = CallbackDeadLetter(event_id=job["event_id"], replay_count=0)
        session.add(row)
    row.message_id = job["message_id"]
    row.tenant = job["tenant"]
    row.url = job["url"][:2048]
    row.status = job["status"]
    row.reason = reason
    row.detail = detail[:2000]
    row.attempts = attempts
    row.job = job
    row.dead_at = utcnow()
    row.replayed_at = None


async def list_dead_callbacks(
    session: AsyncSession, *, tenant: str | None = None, include_replayed: bool = False, limit: int = 100
) -> list[DeadCallback]:
    query = select(CallbackDeadLetter).order_by(CallbackDeadLetter.dead_at.desc()).limit(limit)
    if tenant is not None:
        query = query.where(CallbackDeadLetter.tenant == tenant)
    if not include_replayed:
        query = query.where(CallbackDeadLetter.replayed_at.is_(None))
    return [_view(row) for row in (await session.scalars(query)).all()]


async def get_dead_callback(session: AsyncSession, event_id: str) -> DeadCallback:
    row = await session.get(CallbackDeadLetter, event_id)
    if row is None:
        raise NotFound(f"no dead callback {event_id}")
    return _view(row)


async def mark_callbacks_replayed(session: AsyncSession, event_ids: list[str]) -> None:
    for event_id in event_ids:
        row = await session.get(CallbackDeadLetter, event_id, with_for_update=True)
        if row is not None:
            row.replayed_at = utcnow()
            row.replay_count += 1
