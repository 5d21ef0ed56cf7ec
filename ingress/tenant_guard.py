"""Per-tenant limits on the submit path that every API shares (`Ingress.accept`).

Three checks, the cheap local ones first so a refused request spends no tokens:
- open submits: how many of a tenant's submits this process is making durable at once;
- queued: messages accepted and not yet settled (the store's count, read every
  `guard.limits_refresh_s`, plus what this process accepted since);
- rate: a token bucket of messages per second with a burst (`ingress.rate_buckets`). A batch takes
  a token per message it would queue, all or none: it is refused whole (429) when the bucket cannot
  give them all, so nothing of a refused request is queued and a retry of it is simply the same
  request again.

Limits live in the store (`relay tenants limit`) and are read again every `guard.limits_refresh_s`
(at most 5 s), so a change reaches every running ingress without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import Counter as Tally
from dataclasses import dataclass

from prometheus_client import Counter
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingress.rate_buckets import Bucket, LocalBuckets, SharedBuckets, Verdict
from shared.errors import TransientError
from shared.guard_settings import GuardSettings
from shared.logs import get_logger
from shared.model import Job
from shared.store.tenant_limits import Limits, all_limits, unsettled_by_tenant
from shared.topology import bulk_routing_key

log = get_logger("ingress.limits")

REFUSED = Counter(
    "relay_ingress_rate_limited_total",
    "Submits refused by a tenant's limits, by which limit: rate, open, queued.",
    ["limit"],
)
# Header fields as they go on the wire: lower-case names, encoded values.
Fields = tuple[tuple[bytes, bytes], ...]
OPEN_RETRY_S = 1
QUEUED_RETRY_S = 5


class RateLimited(TransientError):
    """A tenant's submit is over one of its limits; nothing of it was queued."""

    def __init__(self, *, limit: str, detail: str, retry_after_s: int | None) -> None:
        super().__init__(detail)
        self.limit = limit
        self.detail = detail
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """A tenant's limits in force; 0 means none."""

    per_second: float
    burst: int
    max_open: int
    max_queued: int
    bucket: Bucket | None  # made once: a submit compares it, never builds one
    policy_field: bytes = b""  # the RateLimit-Policy value of `bucket`, the same on every answer


def policy_of(limits: Limits | None, defaults: GuardSettings) -> Policy:
    per_second = defaults.default_per_second
    burst = defaults.default_burst
    if limits is not None and limits.per_second is not None:
        per_second, burst = limits.per_second, 0
    if limits is not None and limits.burst is not None:
        burst = limits.burst
    burst = burst or max(1, math.ceil(per_second))
    bucket = Bucket(per_second=per_second, burst=burst) if per_second > 0 else None
    return Policy(
        per_second=per_second,
        burst=burst,
        bucket=bucket,
        policy_field=b"" if bucket is None else rate_limit_policy(bucket),
        max_open=_pick(limits.max_open if limits else None, defaults.default_max_open),
        max_queued=_pick(limits.max_queued if limits else None, defaults.default_max_queued),
    )


def _pick(own: int | None, default: int) -> int:
    return default if own is None else own


class TenantGuard:
    def __init__(
        self, *, settings: GuardSettings, sessions: async_sessionmaker[AsyncSession], prefix: str
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._policies: dict[str, Policy] = {}
        self._default = policy_of(None, settings)
        self._open: Tally[str] = Tally()
        self._queued_stored: dict[str, int] = {}
        self._queued_since: Tally[str] = Tally()  # accepted here since the store was last counted
        self._generation = 0  # store counts read so far
        self._local = LocalBuckets()
        self._last: dict[str, tuple[Bucket, Verdict]] = {}  # each tenant's latest check, for its headers
        self._shared: SharedBuckets | None = None
        if settings.redis_url:
            redis = Redis.from_url(
                settings.redis_url,
                socket_timeout=settings.redis_timeout_s,
                socket_connect_timeout=settings.redis_timeout_s,
            )
            self._shared = SharedBuckets(redis=redis, prefix=prefix)
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_forever(), name="tenant-limits")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._shared is not None:
            await self._shared.close()

    def policy(self, tenant: str) -> Policy:
        return self._policies.get(tenant, self._default)

    def admit(self, tenant: str, count: int) -> Admission:
        """Hold one open submit of `count` messages of `tenant` while the block makes them durable
        (`async with`); `RateLimited` when a limit refuses it."""
        return Admission(self, tenant, count)

    async def _enter(self, tenant: str, count: int) -> int:
        """Check and count an admission; the store-count generation it was counted in."""
        policy = self.policy(tenant)
        if policy.max_open and self._open[tenant] >= policy.max_open:
            self._refuse("open", f"{policy.max_open} submits of this tenant are open already", OPEN_RETRY_S)
        queued = self._queued_stored.get(tenant, 0) + self._queued_since[tenant]
        if policy.max_queued and queued + count > policy.max_queued:
            self._refuse(
                "queued",
                f"this tenant has {queued} messages waiting for delivery; at most {policy.max_queued} may",
                QUEUED_RETRY_S,
            )
        bucket = policy.bucket
        if bucket is not None:
            if self._shared is None:
                verdict = self._local.take(tenant, bucket, count)
            else:
                leased = self._shared.take_leased(tenant, bucket, count)
                verdict = await self._shared.borrow(tenant, bucket, count) if leased is None else leased
            self._last[tenant] = (bucket, verdict)
            if not verdict.decision.allowed:
                self._refuse_rate(bucket, count, verdict)
        # Counted before the store row is written: a refresh that reads the row clears this count, so
        # a message is never counted twice (one admitted during a refresh may be missed until the next).
        self._queued_since[tenant] += count
        self._open[tenant] += 1
        return self._generation

    def _leave(self, tenant: str, count: int, generation: int, *, failed: bool) -> None:
        if failed and generation == self._generation:
            self._queued_since[tenant] -= count
        self._open[tenant] -= 1

    def lanes(self, tenant: str, jobs: list[tuple[Job, str]]) -> list[tuple[Job, str]]:
        """The jobs with the routing key each leaves with: a tenant with more than `guard.bulk_after`
        messages unsettled (the recorder settles them in the store) sends to its sites' bulk queues,
        which workers take after the others'."""
        bulk_after = self._settings.bulk_after
        if not bulk_after or self._queued_stored.get(tenant, 0) + self._queued_since[tenant] <= bulk_after:
            return jobs
        return [(job, bulk_routing_key(site)) for job, site in jobs]

    def fields(self, tenant: str) -> Fields:
        """The IETF draft's RateLimit-Policy and RateLimit fields of a tenant's rate (none without one),
        from its latest check, encoded for the wire: advisory fields, not worth a second look at the
        bucket per answer."""
        policy = self._policies.get(tenant, self._default)
        bucket = policy.bucket
        if bucket is None:
            return ()
        last = self._last.get(tenant)
        if last is not None and (last[0] is bucket or last[0] == bucket):
            verdict = last[1]
        else:
            verdict = (self._shared or self._local).peek(tenant, bucket)
        return ((b"ratelimit-policy", policy.policy_field), (b"ratelimit", rate_limit_value(verdict)))

    async def refresh(self) -> None:
        try:
            async with self._sessions() as session:
                limits = await all_limits(session)
                queued = await unsettled_by_tenant(session)
        except Exception as exc:
            log.warning("tenant limits not read; the last ones stay in force", error=repr(exc))
            return
        # An unchanged policy keeps its objects, so a submit's checks find its bucket by identity.
        fresh = {tenant: policy_of(own, self._settings) for tenant, own in limits.items()}
        self._policies = {
            tenant: old if (old := self._policies.get(tenant)) == policy else policy
            for tenant, policy in fresh.items()
        }
        self._queued_stored = queued
        self._queued_since.clear()
        self._generation += 1

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.limits_refresh_s)
            await self.refresh()

    def _refuse_rate(self, bucket: Bucket, count: int, verdict: Verdict) -> None:
        if count > bucket.burst:
            self._refuse(
                "rate",
                f"{count} messages at once are more than this tenant's burst of {bucket.burst}; "
                "send them in smaller batches",
                None,
            )
        wait_ms = verdict.decision.retry_after_ms or 1000
        self._refuse(
            "rate",
            f"over this tenant's rate of {bucket.per_second:g} messages/s (burst {bucket.burst})",
            max(1, math.ceil(wait_ms / 1000)),
        )

    @staticmethod
    def _refuse(limit: str, detail: str, retry_after_s: int | None) -> None:
        REFUSED.labels(limit).inc()
        raise RateLimited(limit=limit, detail=detail, retry_after_s=retry_after_s)


class Admission:
    """`TenantGuard.admit`'s hold, a plain class: a generator-based context manager per submit cost
    more than the checks it wraps."""

    __slots__ = ("_count", "_generation", "_guard", "_tenant")

    def __init__(self, guard: TenantGuard, tenant: str, count: int) -> None:
        self._guard = guard
        self._tenant = tenant
        self._count = count
        self._generation = 0

    async def __aenter__(self) -> None:
        self._generation = await self._guard._enter(self._tenant, self._count)

    async def __aexit__(self, kind: type[BaseException] | None, *_: object) -> None:
        self._guard._leave(self._tenant, self._count, self._generation, failed=kind is not None)


def rate_limit_policy(bucket: Bucket) -> bytes:
    window_s = max(1, math.ceil(bucket.burst / bucket.per_second))
    return b'"messages";q=%d;w=%d' % (bucket.burst, window_s)


def rate_limit_value(verdict: Verdict) -> bytes:
    return f'"messages";r={verdict.remaining};t={math.ceil(verdict.full_in_s)}'.encode()
