"""Token buckets of tenants' message rates: pyrate-limiter's `TokenBucket` (GCRA), in this process or
shared by every ingress replica through Redis.

A Redis round trip costs more CPU than a whole submit (measured: 0.2-0.4 ms against 0.2 ms), so the
shared buckets are not asked per message. Each process borrows tokens from the shared bucket in a
lease, what its tenant asked of it in the last `LEASE_S`, and spends them locally; what a lease
leaves unspent after `LEASE_S` lapses. A tenant can therefore be held below its rate by at most one lease
of each replica's own demand, never let above it. A borrow the bucket cannot give whole is tried
again for just the message(s) at hand, so a tenant close to its limit is judged exactly.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from prometheus_client import Counter
from pyrate_limiter import Decision, Rate, RedisStateStore, StateStore, TokenBucket
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.logs import get_logger

log = get_logger("ingress.limits")

LEASE_S = 0.1
REDIS_PAUSE_S = 1.0  # after a failure the shared buckets are not asked again for this long
WARN_EVERY_S = 10.0
# Per-second rates may be fractional; the library's rates are integer counts per integer milliseconds.
_SCALE = 1000
_ALGORITHM = TokenBucket()

FAIL_OPEN = Counter(
    "relay_ingress_rate_limit_fail_open_total",
    "Rate-limit checks let through unchecked because Redis could not be asked.",
)
ADMITTED = Decision()


@dataclass(frozen=True, slots=True, kw_only=True)
class Bucket:
    """A tenant's rate: `per_second` messages a second on average, up to `burst` at once."""

    per_second: float
    burst: int

    @property
    def rates(self) -> list[Rate]:
        return [Rate(max(1, round(self.per_second * _SCALE)), 1000 * _SCALE, self.burst)]

    def key(self, tenant: str) -> str:
        # A changed limit starts a fresh bucket rather than reading the old one's state with new rates.
        return f"{tenant}:{self.per_second:g}:{self.burst}"


class Verdict(NamedTuple):
    # A tuple rather than a frozen dataclass: one is made per rate-limited submit, and a frozen
    # dataclass's constructor costs several times a tuple's.
    decision: Decision
    remaining: int  # tokens left after this check (the local view with several replicas)
    full_in_s: float  # seconds until the bucket is full again


def _verdict(bucket: Bucket, decision: Decision, owed: int) -> Verdict:
    owed = 0 if owed < 0 else bucket.burst if owed > bucket.burst else owed
    return Verdict(decision, bucket.burst - owed, owed / bucket.per_second)


@dataclass(slots=True)
class _LocalBucket:
    bucket: Bucket
    rates: list[Rate]
    state: tuple[float, ...]  # the algorithm's: GCRA's theoretical arrival time, µs of the monotonic clock


class LocalBuckets:
    """One process's buckets: right when one ingress process takes a tenant's traffic.

    The state is kept here and advanced by the library's algorithm (`TokenBucket.step`, what its
    `InMemoryStateStore.check` calls) on every rate-limited submit: the store would add a lock that one
    event loop has no use for, and reading the state back for the RateLimit fields is a second call.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _LocalBucket] = {}

    def take(self, tenant: str, bucket: Bucket, weight: int) -> Verdict:
        entry = self._entries.get(tenant)
        # The policy's bucket object stays the same while its limit does (`TenantGuard.refresh`), so
        # identity answers; a new or changed limit starts a fresh bucket.
        if entry is None or entry.bucket is not bucket:
            entry = self._fresh(tenant, bucket, entry)
        now_ms = time.monotonic_ns() // 1_000_000
        entry.state, decision = _ALGORITHM.step(entry.rates, entry.state, now_ms, weight)
        return _verdict(bucket, decision, _owed(bucket, entry.state, now_ms))

    def peek(self, tenant: str, bucket: Bucket) -> Verdict:
        entry = self._entries.get(tenant)
        if entry is None or entry.bucket != bucket:
            return _verdict(bucket, ADMITTED, 0)
        return _verdict(bucket, ADMITTED, _owed(bucket, entry.state, time.monotonic_ns() // 1_000_000))

    def _fresh(self, tenant: str, bucket: Bucket, entry: _LocalBucket | None) -> _LocalBucket:
        if entry is not None and entry.bucket == bucket:  # the same limit in another object
            entry.bucket = bucket
            return entry
        rates = bucket.rates
        entry = self._entries[tenant] = _LocalBucket(bucket, rates, _ALGORITHM.initial(rates))
        return entry


def _owed(bucket: Bucket, state: tuple[float, ...], now_ms: int) -> int:
    """Tokens the bucket is short of full: GCRA's theoretical arrival time (µs) ahead of now, in tokens
    (the library's `consumed`, without its general loop over rates: this is on every submit)."""
    ahead_us = int(state[0]) - now_ms * 1000
    return 0 if ahead_us <= 0 else math.ceil(ahead_us * bucket.per_second / 1_000_000)


@dataclass(slots=True)
class _Lease:
    bucket: Bucket
    store: StateStore
    allowance: int = 0
    expires_at: float = 0.0
    # Messages asked for (refused and waiting ones too) since `window_start`; every LEASE_S they give
    # `estimate`, what one lease's time asks for: the size of the next borrow.
    demand: int = 0
    window_start: float = field(default_factory=time.monotonic)
    estimate: int = 0
    shared_owed: int = 0  # the shared bucket's debt at the last borrow
    refused: Decision = ADMITTED  # the shared bucket's last refusal, answered locally until it lapses
    refused_until: float = 0.0
    refused_weight: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SharedBuckets:
    """Buckets in Redis that every ingress replica of the relay draws on (see the module's note)."""

    def __init__(self, *, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._leases: dict[str, _Lease] = {}
        self._paused_until = 0.0
        self._warned_at = -math.inf

    def take_leased(self, tenant: str, bucket: Bucket, weight: int) -> Verdict | None:
        """The verdict this process can give alone, from its lease or the shared bucket's last refusal;
        None when Redis must be asked (`borrow`). Not a coroutine: most submits end here."""
        lease = self._lease(tenant, bucket)
        lease.demand += weight
        now = time.monotonic()
        if now < lease.expires_at and lease.allowance >= weight:
            lease.allowance -= weight
            return _verdict(bucket, ADMITTED, lease.shared_owed - lease.allowance)
        if now < lease.refused_until and weight >= lease.refused_weight:
            # No replica can make tokens come sooner: a tenant over its rate costs no round trips.
            wait_ms = math.ceil((lease.refused_until - now) * 1000)
            return self._local(
                bucket, lease, Decision(failing_rate=lease.refused.failing_rate, retry_after_ms=wait_ms)
            )
        return None

    async def borrow(self, tenant: str, bucket: Bucket, weight: int) -> Verdict:
        """Ask the shared bucket, after `take_leased` could not answer."""
        lease = self._lease(tenant, bucket)
        if time.monotonic() < self._paused_until:
            return self._fail_open(bucket)
        async with lease.lock:
            now = time.monotonic()
            if now < lease.expires_at and lease.allowance >= weight:  # another borrow just came back
                lease.allowance -= weight
                return self._local(bucket, lease, ADMITTED)
            try:
                return await self._borrow(bucket, lease, weight, now)
            except (RedisError, OSError, TimeoutError) as exc:
                self._paused_until = time.monotonic() + REDIS_PAUSE_S
                if now - self._warned_at >= WARN_EVERY_S:
                    self._warned_at = now
                    log.warning("rate limits fail open: Redis cannot be asked", error=repr(exc))
                return self._fail_open(bucket)

    def peek(self, tenant: str, bucket: Bucket) -> Verdict:
        lease = self._leases.get(tenant)
        if lease is None or lease.bucket != bucket:
            return _verdict(bucket, ADMITTED, 0)
        return self._local(bucket, lease, ADMITTED)

    async def close(self) -> None:
        await self._redis.aclose()

    def _lease(self, tenant: str, bucket: Bucket) -> _Lease:
        lease = self._leases.get(tenant)
        # As with the local buckets: identity first, and a changed limit starts a fresh shared bucket
        # (another Redis key) rather than reading the old one's state with new rates.
        if lease is None or (lease.bucket is not bucket and lease.bucket != bucket):
            # Redis's own clock is not asked: the library passes this process's wall clock, so
            # replicas' clocks should agree to within a token's time (NTP does).
            store = RedisStateStore(self._redis, f"{self._prefix}:ratelimit:{bucket.key(tenant)}")
            lease = self._leases[tenant] = _Lease(bucket=bucket, store=store)
        return lease

    async def _borrow(self, bucket: Bucket, lease: _Lease, weight: int, now: float) -> Verdict:
        unspent = lease.allowance if now < lease.expires_at else 0
        need = weight - unspent
        # What the last LEASE_S asked for, and at least what is needed now.
        elapsed = now - lease.window_start
        if elapsed >= LEASE_S:
            lease.estimate = math.ceil(lease.demand * LEASE_S / elapsed)
            lease.demand, lease.window_start = 0, now
        else:
            # A lease spent before its time was too small: what this window asked for so far is still
            # one lease's demand, and taking it doubles the borrow each time, so a tenant that starts
            # sending after a pause needs a few round trips to reach its pace rather than one per few
            # messages until the window closes.
            lease.estimate = max(lease.estimate, lease.demand)
        want = max(need, min(lease.estimate, bucket.burst - unspent))
        decision = await self._check(bucket, lease, want)
        if not decision.allowed and want > need:
            want = need
            decision = await self._check(bucket, lease, want)
        if not decision.allowed:
            if decision.retry_after_ms is not None:
                lease.refused, lease.refused_weight = decision, need
                lease.refused_until = now + decision.retry_after_ms / 1000
            return self._local(bucket, lease, decision)
        lease.allowance = unspent + want - weight
        lease.expires_at = now + LEASE_S
        rates = bucket.rates
        state = await lease.store.read(_ALGORITHM, rates)  # type: ignore[misc]
        lease.shared_owed = _ALGORITHM.consumed(rates, state, time.time_ns() // 1_000_000)
        return self._local(bucket, lease, ADMITTED)

    async def _check(self, bucket: Bucket, lease: _Lease, weight: int) -> Decision:
        now_ms = time.time_ns() // 1_000_000
        decision: Decision = await lease.store.check(_ALGORITHM, bucket.rates, now_ms, weight)  # type: ignore[misc]
        return decision

    @staticmethod
    def _local(bucket: Bucket, lease: _Lease, decision: Decision) -> Verdict:
        return _verdict(bucket, decision, lease.shared_owed - lease.allowance)

    @staticmethod
    def _fail_open(bucket: Bucket) -> Verdict:
        FAIL_OPEN.inc()
        return _verdict(bucket, ADMITTED, 0)
