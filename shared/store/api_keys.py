"""API keys: only a sha256 of each key is stored; the key itself is shown once, at creation."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import NotFound, PermanentError
from shared.store.models import ApiKey, utcnow

KEY_MARK = "rk_"
PREFIX_CHARS = 11  # "rk_" and 8 random characters: enough to tell keys apart, useless to guess one


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyInfo:
    tenant: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_MARK + secrets.token_urlsafe(32)


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(
        tenant=row.tenant, prefix=row.key_prefix, created_at=row.created_at, revoked_at=row.revoked_at
    )


async def create_key(sessions: async_sessionmaker[AsyncSession], *, tenant: str) -> tuple[str, KeyInfo]:
    """A new key of `tenant`: the key (to show once) and what the store keeps of it."""
    tenant = tenant.strip()
    if not tenant or len(tenant) > 64:
        raise PermanentError("tenant must be 1 to 64 characters")
    key = new_key()
    row = ApiKey(tenant=tenant, key_hash=hash_key(key), key_prefix=key[:PREFIX_CHARS], created_at=utcnow())
    async with sessions.begin() as session:
        session.add(row)
    return key, _info(row)


async def list_keys(sessions: async_sessionmaker[AsyncSession]) -> list[KeyInfo]:
    async with sessions() as session:
        rows = (await session.scalars(select(ApiKey).order_by(ApiKey.tenant, ApiKey.created_at))).all()
    return [_info(row) for row in rows]


async def revoke_key(sessions: async_sessionmaker[AsyncSession], key_or_prefix: str) -> KeyInfo:
    """Revoke one key named by the whole key or by its (unique) prefix."""
    async with sessions.begin() as session:
        rows = list(
            (await session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key_or_prefix)))).all()
        )
        if not rows and len(key_or_prefix) >= len(KEY_MARK) + 4:
            rows = list(
                (
                    await session.scalars(select(ApiKey).where(ApiKey.key_prefix.startswith(key_or_prefix)))
                ).all()
            )
        if not rows:
            raise NotFound(f"no API key matches {key_or_prefix[:PREFIX_CHARS]!r}")
        if len(rows) > 1:
            raise PermanentError(f"{len(rows)} keys start with {key_or_prefix!r}: give more of the key")
        row = rows[0]
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return _info(row)


async def tenant_of(session: AsyncSession, key: str) -> str | None:
    """The tenant of a valid, unrevoked key, else None."""
    row = (
        await session.execute(
            select(ApiKey.tenant, ApiKey.revoked_at).where(ApiKey.key_hash == hash_key(key))
        )
    ).first()
    if row is None or row.revoked_at is not None:
        return None
    return str(row.tenant)
