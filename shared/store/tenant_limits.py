"""Each tenant's limits (`relay tenants limit`), and what the store knows of its current use.

A column left NULL means the setting's default (`guard.default_*`) applies to that tenant.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Float, Integer, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from shared.errors import PermanentError
from shared.model import Status
from shared.store.models import ApiKey, Base, Message, utcnow

UNSETTLED = (Status.ACCEPTED.value, Status.RETRYING.value)
USE_WINDOW_S = 60


class TenantLimit(Base):
    __tablename__ = "tenant_limits"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    per_second: Mapped[float | None] = mapped_column(Float, default=None)
    burst: Mapped[int | None] = mapped_column(Integer, default=None)
    max_open: Mapped[int | None] = mapped_column(Integer, default=None)
    max_queued: Mapped[int | None] = mapped_column(Integer, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """One tenant's limits as stored; None: the default applies."""

    tenant: str
    per_second: float | None = None
    burst: int | None = None
    max_open: int | None = None
    max_queued: int | None = None
    updated_at: datetime | None = None


def _limits(row: TenantLimit) -> Limits:
    return Limits(
        tenant=row.tenant,
        per_second=row.per_second,
        burst=row.burst,
        max_open=row.max_open,
        max_queued=row.max_queued,
        updated_at=row.updated_at,
    )


async def set_limits(
    session: AsyncSession,
    *,
    tenant: str,
    per_second: float | None,
    burst: int | None = None,
    max_open: int | None = None,
    max_queued: int | None = None,
) -> Limits:
    """Create or change a tenant's limits; options left None keep what the tenant had."""
    tenant = tenant.strip()
    if not tenant or len(tenant) > 64:
        raise PermanentError("tenant must be 1 to 64 characters")
    for name, value in (("per-second", per_second), ("burst", burst), ("max-open", max_open)):
        if value is not None and value < 0:
            raise PermanentError(f"--{name} must be 0 or more")
    row = await session.get(TenantLimit, tenant)
    if row is None:
        row = TenantLimit(tenant=tenant)
        session.add(row)
    for name, value in (
        ("per_second", per_second),
        ("burst", burst),
        ("max_open", max_open),
        ("max_queued", max_queued),
    ):
        if value is not None:
            setattr(row, name, value)
    row.updated_at = utcnow()
    await session.flush()
    return _limits(row)


async def all_limits(session: AsyncSession) -> dict[str, Limits]:
    rows = (await session.scalars(select(TenantLimit))).all()
    return {row.tenant: _limits(row) for row in rows}


async def unsettled_by_tenant(session: AsyncSession) -> dict[str, int]:
    """Messages accepted and not yet settled (in the queues, or retrying), per tenant."""
    stmt = select(Message.tenant, func.count()).where(Message.status.in_(UNSETTLED)).group_by(Message.tenant)
    return {tenant: int(count) for tenant, count in (await session.execute(stmt)).all()}


async def recent_by_tenant(session: AsyncSession, *, window_s: int = USE_WINDOW_S) -> dict[str, int]:
    """Messages accepted in the last `window_s` seconds, per tenant."""
    since = utcnow() - timedelta(seconds=window_s)
    stmt = select(Message.tenant, func.count()).where(Message.accepted_at >= since).group_by(Message.tenant)
    return {tenant: int(count) for tenant, count in (await session.execute(stmt)).all()}


async def known_tenants(session: AsyncSession) -> set[str]:
    """Tenants with a key or a limit."""
    keyed = (await session.scalars(select(ApiKey.tenant).distinct())).all()
    limited = (await session.scalars(select(TenantLimit.tenant))).all()
    return set(keyed) | set(limited)
