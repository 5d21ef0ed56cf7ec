"""Idempotency keys: the first answer to (tenant, key) is kept for a while and given again.

A request claims its key with an insert before it publishes anything, so of two concurrent requests
with one key (in this process or another one sharing the store) exactly one publishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.store.models import IdempotencyKey, utcnow
from shared.store.upsert import insert_for

PENDING = 0  # status_code of a claim whose request has not finished


@dataclass(frozen=True, slots=True, kw_only=True)
class Remembered:
    request_hash: str
    status_code: int
    response: dict[str, Any]
    created_at: datetime

    @property
    def pending(self) -> bool:
        return self.status_code == PENDING


def _cutoff(ttl_s: int) -> datetime:
    return utcnow() - timedelta(seconds=ttl_s)


async def lookup(session: AsyncSession, *, tenant: str, key: str, ttl_s: int) -> Remembered | None:
    row = await session.get(IdempotencyKey, (tenant, key), populate_existing=True)
    if row is None or row.created_at < _cutoff(ttl_s):
        return None
    return Remembered(
        request_hash=row.request_hash,
        status_code=row.status_code,
        response=row.response,
        created_at=row.created_at,
    )


async def claim(session: AsyncSession, *, tenant: str, key: str, request_hash: str, ttl_s: int) -> bool:
    """True when this request now owns the key; False when a live claim or answer exists."""
    now = utcnow()
    values = {
        "tenant": tenant,
        "key": key,
        "request_hash": request_hash,
        "status_code": PENDING,
        "response": {},
        "created_at": now,
    }
    inserted = await session.execute(
        insert_for(session, IdempotencyKey).values(values).on_conflict_do_nothing()
    )
    if inserted.rowcount == 1:  # type: ignore[attr-defined]
        return True
    # An expired row may be taken over; the WHERE makes the takeover atomic.
    taken = await session.execute(
        update(IdempotencyKey)
        .where(
            IdempotencyKey.tenant == tenant,
            IdempotencyKey.key == key,
            IdempotencyKey.created_at < _cutoff(ttl_s),
        )
        .values(request_hash=request_hash, status_code=PENDING, response={}, created_at=now)
    )
    return bool(taken.rowcount == 1)  # type: ignore[attr-defined]


async def complete(
    session: AsyncSession, *, tenant: str, key: str, status_code: int, response: dict[str, Any]
) -> None:
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.tenant == tenant, IdempotencyKey.key == key)
        .values(status_code=status_code, response=response)
    )


async def release(session: AsyncSession, *, tenant: str, key: str) -> None:
    """Forget a claim whose request was refused, so the client may fix it and retry with the key."""
    await session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.tenant == tenant,
            IdempotencyKey.key == key,
            IdempotencyKey.status_code == PENDING,
        )
    )


async def purge_expired(session: AsyncSession, *, ttl_s: int) -> int:
    result = await session.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < _cutoff(ttl_s)))
    return int(result.rowcount)  # type: ignore[attr-defined]


__all__ = ["PENDING", "Remembered", "claim", "complete", "lookup", "purge_expired", "release"]
