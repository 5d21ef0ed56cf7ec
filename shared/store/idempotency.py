"""Idempotency keys: the first answer to (tenant, key) is kept for a while and given again.

A request claims its key with an insert before it publishes anything, so of two concurrent requests
with one key (in this process or another one sharing the store) exactly one publishes. The claim records
the message ids the request publishes under. A claim whose request never answered (its process died, or it
failed not knowing what it had published) is taken over a lease after its last renewal (`renew`, while
the request runs) by a repeat of the same request,
which publishes under the same ids: whatever the first one published and the repeat's copy are one message
to the store, the workers and the platforms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.store.models import IdempotencyKey, utcnow
from shared.store.upsert import insert_for

PENDING = 0  # status_code of a claim whose request has not finished
# A pending claim's response: {"message_ids": [...]}, the ids its request publishes under.
IDS = "message_ids"


@dataclass(frozen=True, slots=True, kw_only=True)
class Remembered:
    request_hash: str
    status_code: int
    response: dict[str, Any]
    created_at: datetime

    @property
    def pending(self) -> bool:
        return self.status_code == PENDING


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """The key is this request's now; it publishes its messages under `message_ids`."""

    message_ids: list[str]
    # Taken over from a request that never answered: it may have published under these ids already.
    resumed: bool = False


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


async def claim(
    session: AsyncSession,
    *,
    tenant: str,
    key: str,
    request_hash: str,
    message_ids: Sequence[str],
    ttl_s: int,
    lease_s: float,
) -> Claim | None:
    """The claim when this request now owns the key; None when a live claim or answer exists.

    `message_ids` are the ids this request would publish under; a claim taken over after its lease keeps
    the ids its first request was given.
    """
    now = utcnow()
    fresh = Claim(message_ids=list(message_ids))
    values = {
        "tenant": tenant,
        "key": key,
        "request_hash": request_hash,
        "status_code": PENDING,
        "response": {IDS: fresh.message_ids},
        "created_at": now,
    }
    inserted = await session.execute(
        insert_for(session, IdempotencyKey).values(values).on_conflict_do_nothing()
    )
    if inserted.rowcount == 1:  # type: ignore[attr-defined]
        return fresh
    # An expired row may be taken over; the WHERE makes each takeover atomic.
    this_key = (IdempotencyKey.tenant == tenant, IdempotencyKey.key == key)
    taken = await session.execute(
        update(IdempotencyKey)
        .where(*this_key, IdempotencyKey.created_at < _cutoff(ttl_s))
        .values(
            request_hash=request_hash, status_code=PENDING, response={IDS: fresh.message_ids}, created_at=now
        )
    )
    if taken.rowcount == 1:  # type: ignore[attr-defined]
        return fresh
    return await _resume(
        session, tenant=tenant, key=key, request_hash=request_hash, lease_s=lease_s, fresh=fresh
    )


async def _resume(
    session: AsyncSession, *, tenant: str, key: str, request_hash: str, lease_s: float, fresh: Claim
) -> Claim | None:
    """Take over a pending claim past its lease, for a repeat of its request only (the first one may
    have published), under the ids it recorded."""
    now = utcnow()
    this_key = (IdempotencyKey.tenant == tenant, IdempotencyKey.key == key)
    resumed = await session.execute(
        update(IdempotencyKey)
        .where(
            *this_key,
            IdempotencyKey.status_code == PENDING,
            IdempotencyKey.request_hash == request_hash,
            IdempotencyKey.created_at < now - timedelta(seconds=lease_s),
        )
        .values(created_at=now)
    )
    if resumed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = await session.get(IdempotencyKey, (tenant, key), populate_existing=True)
    recorded = row.response.get(IDS) if row is not None else None
    if isinstance(recorded, list) and len(recorded) == len(fresh.message_ids):
        return Claim(message_ids=[str(i) for i in recorded], resumed=True)
    # A claim that recorded no ids (made before they were recorded) gets this request's.
    await session.execute(update(IdempotencyKey).where(*this_key).values(response={IDS: fresh.message_ids}))
    return Claim(message_ids=fresh.message_ids, resumed=True)


async def complete(
    session: AsyncSession, *, tenant: str, key: str, status_code: int, response: dict[str, Any]
) -> None:
    await session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.tenant == tenant, IdempotencyKey.key == key)
        .values(status_code=status_code, response=response)
    )


async def renew(session: AsyncSession, *, tenant: str, key: str) -> None:
    """The request holding this pending claim is still running: its lease starts again."""
    await session.execute(
        update(IdempotencyKey)
        .where(
            IdempotencyKey.tenant == tenant, IdempotencyKey.key == key, IdempotencyKey.status_code == PENDING
        )
        .values(created_at=utcnow())
    )


async def end_lease(session: AsyncSession, *, tenant: str, key: str, lease_s: float) -> None:
    """Let a repeat of a request that failed not knowing what it published take over its claim at once."""
    await session.execute(
        update(IdempotencyKey)
        .where(
            IdempotencyKey.tenant == tenant, IdempotencyKey.key == key, IdempotencyKey.status_code == PENDING
        )
        .values(created_at=utcnow() - timedelta(seconds=lease_s + 1))
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


__all__ = [
    "PENDING",
    "Claim",
    "Remembered",
    "claim",
    "complete",
    "end_lease",
    "lookup",
    "purge_expired",
    "release",
    "renew",
]
