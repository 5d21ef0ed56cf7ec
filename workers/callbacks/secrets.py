"""The store as the callback worker uses it: tenants' signing secrets (cached briefly) and dead callbacks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.store.callbacks import record_dead_callback, secrets_in_force, signing_secret

SECRETS_TTL_S = 5.0  # a rotation reaches callbacks within this


class SecretCache:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, overlap_s: int = 86_400) -> None:
        self._sessions = sessions
        self._overlap_s = overlap_s
        self._cache: dict[str, tuple[float, list[str]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def of(self, tenant: str) -> list[str]:
        """The tenant's secrets in force, current first; one is made when the tenant has none yet (the
        tenant reads it with `relay keys secret`). Read once for all the callbacks that want them at once
        (a bundle's callbacks of one tenant do), not once each."""
        cached = self._cache.get(tenant)
        if cached is not None and time.monotonic() - cached[0] < SECRETS_TTL_S:
            return cached[1]
        lock = self._locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            cached = self._cache.get(tenant)
            if cached is not None and time.monotonic() - cached[0] < SECRETS_TTL_S:
                return cached[1]
            found = await self._read(tenant)
            self._cache[tenant] = (time.monotonic(), found)
        return found

    async def _read(self, tenant: str) -> list[str]:
        async with self._sessions() as session:
            found = await secrets_in_force(session, tenant)
        if not found:
            async with self._sessions.begin() as session:
                found = [
                    await signing_secret(session, tenant=tenant, rotate=False, overlap_s=self._overlap_s)
                ]
        return found


class DeadCallbacks:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record(self, job: dict[str, Any], reason: str, detail: str, attempts: int) -> None:
        async with self._sessions.begin() as session:
            await record_dead_callback(session, job=job, reason=reason, detail=detail, attempts=attempts)
