"""Bearer-key authentication with a short in-process cache (a revoked key stops working within
`POSITIVE_TTL_S`), so a submit costs no store round trip.

Lookups are single-flight: when a key's entry expires under load, one query refreshes it and every
concurrent request waits for that one, instead of all of them queueing for store connections.
"""

from __future__ import annotations

import asyncio
import time

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingress import problems
from shared.errors import StoreUnavailable
from shared.store.api_keys import hash_key, tenant_of

POSITIVE_TTL_S = 5.0
NEGATIVE_TTL_S = 1.0
MAX_ENTRIES = 10_000


def bearer_key(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return key.strip()


async def authenticate(keys: KeyCache, authorization: str | None) -> str:
    """The tenant of a request's `Authorization` header: a 401 problem without a valid key, a 503 one
    when the store cannot tell. Every route that needs a key, the submit fast path's included, asks here."""
    key = bearer_key(authorization)
    if key is None:
        raise problems.unauthorized("an Authorization: Bearer <API key> header is required")
    try:
        tenant = await keys.tenant(key)
    except StoreUnavailable as exc:
        raise problems.unavailable("cannot check the API key right now") from exc
    if tenant is None:
        raise problems.unauthorized("the API key is unknown or revoked")
    return tenant


class KeyCache:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._entries: dict[str, tuple[str | None, float]] = {}
        self._lookups: dict[str, asyncio.Future[str | None]] = {}

    async def tenant(self, key: str) -> str | None:
        """The key's tenant; None for an unknown or revoked key; `StoreUnavailable` if unsure."""
        digest = hash_key(key)
        cached = self._entries.get(digest)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        running = self._lookups.get(digest)
        if running is None:
            running = asyncio.ensure_future(self._lookup(key, digest))
            self._lookups[digest] = running
            running.add_done_callback(lambda _: self._lookups.pop(digest, None))
        try:
            return await asyncio.shield(running)
        except StoreUnavailable:
            if cached is not None and cached[0] is not None:
                return cached[0]  # the store is away: a key it vouched for recently still counts
            raise

    async def _lookup(self, key: str, digest: str) -> str | None:
        try:
            async with self._sessions() as session:
                tenant = await tenant_of(session, key)
        except Exception as exc:
            raise StoreUnavailable(f"cannot check the API key: {exc!r}") from exc
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[digest] = (tenant, time.monotonic() + (POSITIVE_TTL_S if tenant else NEGATIVE_TTL_S))
        return tenant
