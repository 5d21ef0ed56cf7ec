"""What happens to a job after an attempt: pure decisions over the delivery state in its AMQP headers.

The attempt count lives only in headers (never in process memory), so any worker, after any crash, makes
the same decision. Retries go through the delay queues; the n-th retry (n = attempts made so far, all
sites) waits in tier n of `worker.retry_delays_s` (the last tier after that), so a message that fails
everywhere backs off instead of spinning. After `attempts_per_site` attempts at one site's platform the
job moves to the next site (sorted names, wrapping), with the site's count reset.

When the breaker of the site that just failed is open, the job is handed to the next site at once: it
goes straight back into the jobs exchange under that site's routing key, without a delay, because the
other site is the fast way out and waiting would only add to the failover gap. Such an attempt is an
outage's, not the message's: it does not count towards `max_attempts` (see `H_OUTAGE_ATTEMPT`).

A job longer than the site about to send it carries whole (`sites.<name>.max_segments`: a standby take
from another site's queue, or a limit lowered after the job was routed) is not sent there: it is handed to
the next site that carries it (`elsewhere`), as a failover hands it, and no attempt is counted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from shared.envelope import (
    H_ATTEMPT,
    H_ORIGIN,
    H_OUTAGE_ATTEMPT,
    H_POSSIBLE_DUPLICATE,
    H_SITE,
    H_SITE_ATTEMPT,
)
from shared.topology import Topology, jobs_exchange

DEFAULT_EXCHANGE = ""


def _count(value: Any) -> int:
    """A header count; anything unreadable counts as 0 rather than stopping the job."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(0, value)
    if isinstance(value, bytes | str):
        try:
            return max(0, int(value))
        except ValueError:
            return 0
    return 0


def _flag(value: Any) -> bool:
    """A header flag: set unless absent or plainly false."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no")
    return bool(value)


def _text(value: Any, default: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) and value else default


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryState:
    """The delivery state a job carries in its headers."""

    attempt: int  # attempts made so far, all sites
    site_attempt: int  # attempts made at `site`
    site: str  # the site whose queue holds the job
    origin: str  # the site routing chose at submit
    outage_attempt: int = 0  # attempts that failed while their site's breaker was open
    # The job may have reached a platform before without a mark of its own: its message came redelivered
    # (a worker died holding it) or with `H_POSSIBLE_DUPLICATE`. It keeps the mark until it ends.
    possible_duplicate: bool = False

    @property
    def counted_attempts(self) -> int:
        """Attempts that count towards `worker.max_attempts`."""
        return max(0, self.attempt - self.outage_attempt)

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, Any] | None, *, queue_site: str, redelivered: bool = False
    ) -> DeliveryState:
        headers = headers or {}
        site = _text(headers.get(H_SITE), queue_site)
        return cls(
            attempt=_count(headers.get(H_ATTEMPT)),
            site_attempt=_count(headers.get(H_SITE_ATTEMPT)),
            site=site,
            origin=_text(headers.get(H_ORIGIN), site),
            outage_attempt=_count(headers.get(H_OUTAGE_ATTEMPT)),
            possible_duplicate=redelivered or _flag(headers.get(H_POSSIBLE_DUPLICATE)),
        )

    def headers(self) -> dict[str, Any]:
        headers: dict[str, Any] = {
            H_ATTEMPT: self.attempt,
            H_SITE_ATTEMPT: self.site_attempt,
            H_SITE: self.site,
            H_ORIGIN: self.origin,
            H_OUTAGE_ATTEMPT: self.outage_attempt,
        }
        if self.possible_duplicate:
            headers[H_POSSIBLE_DUPLICATE] = True
        return headers


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """Republish the job (same body) with `state` as headers to `exchange`/`routing_key`."""

    state: DeliveryState
    exchange: str
    routing_key: str
    switched_site: bool  # the job leaves the site that failed it

    @property
    def delayed(self) -> bool:
        return self.exchange == DEFAULT_EXCHANGE


@dataclass(frozen=True, slots=True, kw_only=True)
class GiveUp:
    """Attempts exhausted: dead-letter the job."""

    attempts: int


def next_site(sites: Sequence[str], site: str) -> str:
    """The site after `site` in sorted order, wrapping; `site` itself when it is the only one."""
    ordered = sorted(sites)
    if site not in ordered:
        return ordered[0]
    return ordered[(ordered.index(site) + 1) % len(ordered)]


def after_failure(
    state: DeliveryState,
    *,
    tried_site: str,
    topology: Topology,
    attempts_per_site: int,
    max_attempts: int,
    site_failing: bool,
) -> Retry | GiveUp:
    """The step after an unavailable or ambiguous attempt at `tried_site`'s platform.

    `site_failing` is true when that site's breaker is open: the job then moves to the next site now.
    """
    attempt = state.attempt + 1
    outage_attempt = state.outage_attempt + 1 if site_failing else state.outage_attempt
    if not site_failing and attempt - outage_attempt >= max_attempts:
        return GiveUp(attempts=attempt)
    # A job taken from another site's queue (standby) starts counting at the site that tried it.
    site_attempt = (state.site_attempt if state.site == tried_site else 0) + 1
    other = next_site(topology.sites, tried_site)
    switch = other != tried_site and (site_failing or site_attempt >= attempts_per_site)
    if switch:
        new_state = replace(state, attempt=attempt, site_attempt=0, site=other, outage_attempt=outage_attempt)
    else:
        new_state = replace(
            state, attempt=attempt, site_attempt=site_attempt, site=tried_site, outage_attempt=outage_attempt
        )
    if switch and site_failing:
        return Retry(
            state=new_state, exchange=jobs_exchange(topology.prefix), routing_key=other, switched_site=True
        )
    return Retry(
        state=new_state,
        exchange=DEFAULT_EXCHANGE,
        routing_key=topology.delay_queue_for(new_state.site, attempt),
        switched_site=switch,
    )


def elsewhere(
    state: DeliveryState, *, segments: int, tried_site: str, limits: Mapping[str, int], topology: Topology
) -> Retry | None:
    """Where a job of `segments` segments goes instead of `tried_site`, which cannot carry it whole: the next
    site that can (sorted names, wrapping), or None when no site can.

    A job taken from the queue of the only site that carries it (a standby take) waits in that site's first
    delay queue and comes back to its queue, rather than straight back to the consumer that just gave it up.
    """
    ordered = sorted(topology.sites)
    start = ordered.index(tried_site) + 1 if tried_site in ordered else 0
    able = [s for s in ordered[start:] + ordered[:start] if limits.get(s, 0) >= segments]
    if not able:
        return None
    other = next((s for s in able if s != state.site), None)
    if other is None:
        return Retry(
            state=state,
            exchange=DEFAULT_EXCHANGE,
            routing_key=topology.delay_queue_for(state.site, 1),
            switched_site=False,
        )
    return Retry(
        state=replace(state, site=other, site_attempt=0),
        exchange=jobs_exchange(topology.prefix),
        routing_key=other,
        switched_site=True,
    )
