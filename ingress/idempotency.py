"""Idempotency-Key handling: one publish per (tenant, key), the first answer given to every repeat.

Concurrent repeats in this process wait on the first one's future; repeats in another process sharing
the store see its claim row and wait for the answer to appear. The claim records the message ids the
request publishes under. Its lease (`ingress.idempotency_lease_s`) is renewed while the request runs; a
claim whose request never answered (its process died) runs out a lease after its last renewal and is
taken over by a repeat of the same request, which publishes under the same ids. A repeat waits up to
`OTHER_PROCESS_WAIT_S` for the first request's answer or for its lease to run out, so with a lease no
longer than that wait a repeat of a request whose replica died gets its answer instead of a 409.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import PermanentError, StoreUnavailable
from shared.logs import get_logger
from shared.model import new_message_ids
from shared.store import idempotency as repo

log = get_logger("ingress.idempotency")

MAX_KEY_CHARS = 255
OTHER_PROCESS_WAIT_S = 10.0
POLL_INTERVAL_S = 0.05
RENEWALS_PER_LEASE = 3


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


# Makes the answer to a request, publishing its messages under the ids given (one per message of the
# request, in order).
# Makes the answer of a request under the given message ids; the flag says they were claimed by an earlier
# request that may have published them already, so what goes out now is marked a possible duplicate.
Produce = Callable[[list[str], bool], Awaitable[Answer]]


class IdempotencyGuard:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        ttl_s: int,
        lease_s: float,
        other_process_wait_s: float = OTHER_PROCESS_WAIT_S,
    ) -> None:
        self._sessions = sessions
        self._ttl_s = ttl_s
        self._lease_s = lease_s
        self._wait_s = other_process_wait_s
        self._in_flight: dict[tuple[str, str], asyncio.Future[tuple[str, Answer]]] = {}

    async def run(
        self, *, tenant: str, key: str, digest: str, message_count: int, produce: Produce
    ) -> Answer:
        slot = (tenant, key)
        running = self._in_flight.get(slot)
        if running is not None:
            first_digest, answer = await asyncio.shield(running)
            return self._repeat(first_digest, digest, answer)
        future: asyncio.Future[tuple[str, Answer]] = asyncio.get_running_loop().create_future()
        self._in_flight[slot] = future
        try:
            answer = await self._run_first(
                tenant=tenant, key=key, digest=digest, message_count=message_count, produce=produce
            )
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
        self, *, tenant: str, key: str, digest: str, message_count: int, produce: Produce
    ) -> Answer:
        claim = await self._claim(tenant=tenant, key=key, digest=digest, message_count=message_count)
        if isinstance(claim, Answer):
            return claim
        if claim.resumed:
            log.warning(
                "Idempotency-Key claim taken over after its lease; publishing under its message ids",
                tenant=tenant,
                message_ids=claim.message_ids,
            )
        renewing = asyncio.create_task(self._renew(tenant=tenant, key=key), name="idempotency-renew")
        try:
            answer = await produce(claim.message_ids, claim.resumed)
        except BaseException:
            await _stopped(renewing)
            # Some of its messages may be out: a repeat goes on under the same ids at once.
            await self._in_store(repo.end_lease, tenant=tenant, key=key, lease_s=self._lease_s)
            raise
        await _stopped(renewing)
        if 200 <= answer.status_code < 300:
            # If this fails the claim stays pending: a repeat after the lease sends the messages again
            # under the same ids rather than answering without knowing they are out.
            await self._in_store(
                repo.complete, tenant=tenant, key=key, status_code=answer.status_code, response=answer.body
            )
        else:
            # Refused before anything was published: the client may fix the request and use the key again.
            await self._in_store(repo.release, tenant=tenant, key=key)
        return answer

    async def _claim(self, *, tenant: str, key: str, digest: str, message_count: int) -> repo.Claim | Answer:
        """This request's claim, or the answer a finished request with the key gave."""
        fresh_ids = new_message_ids(message_count)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_s
        while True:
            try:
                async with self._sessions.begin() as session:
                    known = await repo.lookup(session, tenant=tenant, key=key, ttl_s=self._ttl_s)
                    claim = None
                    if known is None or (known.pending and known.request_hash == digest):
                        claim = await repo.claim(
                            session,
                            tenant=tenant,
                            key=key,
                            request_hash=digest,
                            message_ids=fresh_ids,
                            ttl_s=self._ttl_s,
                            lease_s=self._lease_s,
                        )
            except Exception as exc:
                raise StoreUnavailable(f"cannot check the Idempotency-Key: {exc!r}") from exc
            if claim is not None:
                return claim
            if known is not None and not known.pending:
                return self._repeat(
                    known.request_hash, digest, Answer(status_code=known.status_code, body=known.response)
                )
            if known is not None and known.request_hash != digest:
                raise IdempotencyConflict("this Idempotency-Key was used with a different request")
            if loop.time() > deadline:
                raise IdempotencyConflict("a request with this Idempotency-Key is still being processed")
            await asyncio.sleep(POLL_INTERVAL_S)

    async def _renew(self, *, tenant: str, key: str) -> None:
        """While the request runs its claim's lease is renewed, so the lease can be short: only a claim
        whose process died (or lost the store) runs out, and a repeat takes it over within seconds."""
        while True:
            await asyncio.sleep(self._lease_s / RENEWALS_PER_LEASE)
            await self._in_store(repo.renew, tenant=tenant, key=key)

    async def _in_store(self, change: Callable[..., Awaitable[None]], **arguments: Any) -> None:
        """Best effort: when the store fails the claim stays pending until its lease ends."""
        try:
            async with self._sessions.begin() as session:
                await change(session, **arguments)
        except Exception as exc:
            log.warning("Idempotency-Key claim not updated", error=repr(exc), change=change.__name__)


async def _stopped(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
