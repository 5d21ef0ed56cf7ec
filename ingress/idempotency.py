"""Idempotency-Key handling: one publish per (tenant, key), the first answer given to every repeat.

Concurrent repeats in this process wait on the first one's future; repeats in another process sharing
the store see its claim row and wait for the answer to appear.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import PermanentError, StoreUnavailable
from shared.store import idempotency as repo

MAX_KEY_CHARS = 255
OTHER_PROCESS_WAIT_S = 10.0
POLL_INTERVAL_S = 0.05


class IdempotencyConflict(PermanentError):
    """The key was used before with another request, or that request is still running."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    status_code: int
    body: dict[str, Any]
    replayed: bool = False


def request_hash(path: str, payload: Any) -> str:
    """Hash of what the request asks for; key order and whitespace do not matter."""
    canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(path.encode() + b"\0" + canonical).hexdigest()


class IdempotencyGuard:
    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], ttl_s: int) -> None:
        self._sessions = sessions
        self._ttl_s = ttl_s
        self._in_flight: dict[tuple[str, str], asyncio.Future[tuple[str, Answer]]] = {}

    async def run(
        self, *, tenant: str, key: str, digest: str, produce: Callable[[], Awaitable[Answer]]
    ) -> Answer:
        slot = (tenant, key)
        running = self._in_flight.get(slot)
        if running is not None:
            first_digest, answer = await asyncio.shield(running)
            return self._repeat(first_digest, digest, answer)
        future: asyncio.Future[tuple[str, Answer]] = asyncio.get_running_loop().create_future()
        self._in_flight[slot] = future
        try:
            answer = await self._run_first(tenant=tenant, key=key, digest=digest, produce=produce)
            future.set_result((digest, answer))
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here, so an unawaited failure is not reported twice
            raise
        finally:
            del self._in_flight[slot]

    def _repeat(self, first_digest: str, digest: str, answer: Answer) -> Answer:
        if first_digest != digest:
            raise IdempotencyConflict("this Idempotency-Key was used with a different request")
        return Answer(status_code=answer.status_code, body=answer.body, replayed=True)

    async def _run_first(
        self, *, tenant: str, key: str, digest: str, produce: Callable[[], Awaitable[Answer]]
    ) -> Answer:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + OTHER_PROCESS_WAIT_S
        while True:
            try:
                async with self._sessions.begin() as session:
                    known = await repo.lookup(session, tenant=tenant, key=key, ttl_s=self._ttl_s)
                    claimed = known is None and await repo.claim(
                        session, tenant=tenant, key=key, request_hash=digest, ttl_s=self._ttl_s
                    )
            except Exception as exc:
                raise StoreUnavailable(f"cannot check the Idempotency-Key: {exc!r}") from exc
            if claimed:
                break
            if known is not None and not known.pending:
                return self._repeat(
                    known.request_hash, digest, Answer(status_code=known.status_code, body=known.response)
                )
            if known is not None and known.request_hash != digest:
                raise IdempotencyConflict("this Idempotency-Key was used with a different request")
            if loop.time() > deadline:
                raise IdempotencyConflict("a request with this Idempotency-Key is still being processed")
            await asyncio.sleep(POLL_INTERVAL_S)

        try:
            answer = await produce()
        except BaseException:
            await self._release(tenant, key)
            raise
        if 200 <= answer.status_code < 300:
            try:
                async with self._sessions.begin() as session:
                    await repo.complete(
                        session, tenant=tenant, key=key, status_code=answer.status_code, response=answer.body
                    )
            except Exception:
                # The messages are durable and the claim row stays: a repeat gets 409 rather than
                # a second SMS, which is the safe side.
                pass
        else:
            await self._release(tenant, key)
        return answer

    async def _release(self, tenant: str, key: str) -> None:
        try:
            async with self._sessions.begin() as session:
                await repo.release(session, tenant=tenant, key=key)
        except Exception:
            pass
