"""Client traffic and receipt clocks for the broker cluster faults (tests and bench_cluster).

A client that retries whatever got no 202 with the same Idempotency-Key, as the API asks of clients; the
simulators' receipts polled often enough to time a gap in deliveries.
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import text

from ops.drill_traffic import drill_number, message_id_from, submit_body
from ops.harness.deployment import Deployment
from ops.harness.simulators import SimulatorAdmin
from shared.settings import StoreSettings
from shared.store.engine import make_engine

RATE_PER_S = 40.0
DELIVERED_WITHIN_S = 120.0
RETRY_AFTER_S = 0.5
RETRY_FOR_S = 120.0
POLL_INTERVAL_S = 0.1
MARKED_ATTEMPTS = "SELECT count(*) FROM attempts WHERE possible_duplicate OR outcome = 'ambiguous'"


@dataclass(slots=True, kw_only=True)
class Submits:
    accepted: dict[str, str] = field(default_factory=dict)  # Idempotency-Key -> message id of the 202
    failures: list[tuple[float, str]] = field(default_factory=list)  # (when, what) of each non-202
    gave_up: list[str] = field(default_factory=list)  # keys with no 202 after RETRY_FOR_S
    # Idempotency-Key -> seconds from its first answer that was not a 202 (or none) to its 202
    retried_for_s: dict[str, float] = field(default_factory=dict)

    @property
    def error_window_s(self) -> float:
        """From the first answer that was not a 202 to the last one."""
        if not self.failures:
            return 0.0
        return self.failures[-1][0] - self.failures[0][0]


async def submit_stream(
    *,
    api_url: str | Sequence[str],
    key: str,
    count: int,
    rate_per_s: float,
    submits: Submits | None = None,
) -> Submits:
    """`count` submits at `rate_per_s`, each retried with its own Idempotency-Key until answered 202.
    With several API URLs (replicas of the ingress) the submits take turns, and each retry goes to the
    next replica after the one that did not answer 202."""
    submits = submits or Submits()
    urls = [api_url] if isinstance(api_url, str) else list(api_url)
    run = uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=10.0) as client:

        async def one(index: int) -> None:
            idempotency_key = f"{run}-{index}"
            body = submit_body(to=drill_number(index), sender="CLUSTER", text=f"cluster fault {index}")
            deadline = time.monotonic() + RETRY_FOR_S
            first_failure: float | None = None
            for attempt in itertools.count():
                if time.monotonic() >= deadline:
                    break
                url = urls[(index + attempt) % len(urls)]
                try:
                    response = await client.post(
                        f"{url}/v1/messages", json=body, headers={"Idempotency-Key": idempotency_key}
                    )
                    message_id = message_id_from(response.json()) if response.content else None
                    if response.status_code == 202 and message_id is not None:
                        submits.accepted[idempotency_key] = message_id
                        if first_failure is not None:
                            submits.retried_for_s[idempotency_key] = time.monotonic() - first_failure
                        return
                    submits.failures.append((time.time(), f"HTTP {response.status_code}"))
                except (httpx.HTTPError, ValueError) as exc:
                    submits.failures.append((time.time(), type(exc).__name__))
                first_failure = first_failure if first_failure is not None else time.monotonic()
                await asyncio.sleep(RETRY_AFTER_S)
            submits.gave_up.append(idempotency_key)

        tasks = []
        for index in range(count):
            tasks.append(asyncio.create_task(one(index)))
            await asyncio.sleep(1 / rate_per_s)
        await asyncio.gather(*tasks)
    return submits


class ReceiptClock:
    """When each message id first reached a platform, to POLL_INTERVAL_S."""

    def __init__(self, sims: dict[str, SimulatorAdmin]) -> None:
        self._sims = sims
        self._seen: dict[str, int] = dict.fromkeys(sims, 0)
        self.first_at: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.to_thread(self.poll)
            await asyncio.sleep(POLL_INTERVAL_S)
        await asyncio.to_thread(self.poll)

    def poll(self) -> None:
        now = time.time()
        for site, sim in self._sims.items():
            refs, self._seen[site] = sim.references_since(self._seen[site])
            for ref in refs:
                self.first_at.setdefault(ref, now)

    def gap_s(self, *, start: float, end: float) -> float:
        """The longest time in [start, end] with no first receipt at all."""
        times = sorted(t for t in self.first_at.values() if start <= t <= end)
        edges = [start, *times, end]
        return max(b - a for a, b in itertools.pairwise(edges))


def duplicates_at_platforms(sims: dict[str, SimulatorAdmin]) -> int:
    """Receipts beyond the first of one message id, at one platform or across both."""
    repeats = sum(sim.stats()["duplicates"] for sim in sims.values())
    seen = [set(sim.references()) for sim in sims.values()]
    return repeats + len(set.intersection(*seen))


def marked_attempts(store: Path) -> int:
    """Attempts the workers recorded as maybe sent before: marked possible duplicates, or ambiguous."""
    with sqlite3.connect(store) as db:
        row = db.execute(MARKED_ATTEMPTS).fetchone()
    return int(row[0])


async def marked_attempts_at(store_url: str) -> int:
    """`marked_attempts` of any store, by its SQLAlchemy URL (a PostgreSQL one several replicas share)."""
    engine = make_engine(StoreSettings(url=store_url))
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(text(MARKED_ATTEMPTS))).scalar_one())
    finally:
        await engine.dispose()


async def delivered(up: Deployment, clock: ReceiptClock, submits: Submits) -> list[str]:
    """Waits for every accepted message id to reach a platform; the ids that never did."""
    wanted = set(submits.accepted.values())
    deadline = time.monotonic() + DELIVERED_WITHIN_S
    while time.monotonic() < deadline and not wanted <= clock.first_at.keys():
        await asyncio.to_thread(clock.poll)
        await asyncio.sleep(0.5)
    return sorted(wanted - clock.first_at.keys())


async def stream_through(
    up: Deployment,
    *,
    count: int,
    fault_at_s: float,
    fault: Callable[[], None],
    heal_at_s: float,
    heal: Callable[[], None],
) -> tuple[Submits, ReceiptClock, float]:
    """Submits `count` messages; `fault()` after `fault_at_s`, `heal()` after `heal_at_s`."""
    clock = ReceiptClock(dict(up.simulators))
    stop = asyncio.Event()
    polling = asyncio.create_task(clock.run(stop))
    sending = asyncio.create_task(
        submit_stream(api_url=up.api_url, key=up.key, count=count, rate_per_s=RATE_PER_S)
    )
    await asyncio.sleep(fault_at_s)
    fault_time = time.time()
    await asyncio.to_thread(fault)
    await asyncio.sleep(max(0.0, heal_at_s - fault_at_s))
    await asyncio.to_thread(heal)
    submits = await sending
    stop.set()
    await polling
    return submits, clock, fault_time


def report(name: str, submits: Submits, clock: ReceiptClock, fault_time: float) -> float:
    gap_s = clock.gap_s(start=fault_time - 1.0, end=fault_time + 30.0)
    print(
        f"\n{name}: {len(submits.accepted)} accepted, {len(submits.failures)} answers not 202 "
        f"over {submits.error_window_s:.2f} s, longest gap without deliveries {gap_s:.2f} s"
    )
    return gap_s
