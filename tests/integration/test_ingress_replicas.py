"""Two ingress replicas on one PostgreSQL store, each with its own spool, while one of them is SIGKILLed
mid-stream: a whole `relay up` deployment (replica A, a worker per site, simulated platforms) and a second
`relay ingress` (replica B) beside it, reaching the broker through a proxy that can hold back its confirms.
A client spreads submits over both and retries on the other replica, with the same Idempotency-Key,
whatever got no 202. Nothing answered 202 may be lost, no message may go out under an id its client was
never given, a second copy at a platform only ever follows an attempt marked as maybe sent before, and
the dead replica's spool is drained by the survivor.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from ingress.spool import summarize
from ops.harness.cluster_traffic import (
    RATE_PER_S,
    ReceiptClock,
    Submits,
    delivered,
    duplicates_at_platforms,
    marked_attempts_at,
    report,
    submit_stream,
)
from ops.harness.deployment import Deployment, relay_up
from ops.harness.processes import RELAY, free_port, sigkill, spawned
from ops.launcher import wait_until_ready
from shared.model import TERMINAL
from shared.store.recording import status_rank as store_rank
from tests.ingress_helpers import TcpProxy
from tests.integration.ops_support import scratch_postgres

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COUNT = int(RATE_PER_S * 15)
CONFIRM_TIMEOUT_S = 2.0
SLOW_CONFIRMS_AT_S = 4.0
# From then on B's confirms come later than its confirm timeout: the submits of the first confirm timeout
# are spooled (held, marked) once it runs out, those behind them are spooled at once, and the submits of
# the last confirm timeout before the kill are still waiting for their confirm: their Idempotency-Key
# claims are left pending, their messages published.
KILL_AT_S = SLOW_CONFIRMS_AT_S + 1.5 * CONFIRM_TIMEOUT_S
CONFIRM_DELAY_S = 3 * CONFIRM_TIMEOUT_S  # no confirm reaches B before it dies
TAKEN_OVER = "claim taken over after its lease"
RETRY_ANSWERED_WITHIN_S = 60.0
READY_WITHIN_S = 60.0
DRAINED_WITHIN_S = 30.0


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with scratch_postgres() as url:
        yield url


def spool_paths(directory: Path) -> tuple[Path, Path]:
    return directory / "replica-a" / "spool.db", directory / "replica-b" / "spool.db"


@pytest.fixture
def deployment(tmp_path: Path, broker_url: str, postgres_url: str) -> Iterator[Deployment]:
    """Replica A: `relay up` on the shared store, draining B's spool once B is dead."""
    a_spool, b_spool = spool_paths(tmp_path)
    for path in (a_spool, b_spool):
        path.parent.mkdir()
    with relay_up(
        tmp_path,
        broker_url=broker_url,
        prefix=f"t{uuid.uuid4().hex[:10]}",
        broker={"confirm_timeout_s": CONFIRM_TIMEOUT_S},
        store={"url": postgres_url},
        ingress={"spool_path": str(a_spool), "peer_spool_paths": [str(b_spool)]},
    ) as up:
        yield up


@contextlib.contextmanager
def replica_b(up: Deployment, *, broker_url: str, port: int, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`relay ingress` of the same configuration, its own port and spool, A's spool as its peer."""
    a_spool, b_spool = spool_paths(up.config.parent)
    env = {
        **os.environ,
        "RELAY_BROKER__URL": broker_url,
        "RELAY_INGRESS__PORT": str(port),
        "RELAY_INGRESS__SPOOL_PATH": str(b_spool),
        "RELAY_INGRESS__PEER_SPOOL_PATHS": json.dumps([str(a_spool)]),
    }
    with spawned([*RELAY, "--config", str(up.config), "ingress"], env=env, log=log) as proc:
        yield proc


def via(broker_url: str, port: int) -> str:
    parts = urlsplit(broker_url)
    netloc = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    return urlunsplit(parts._replace(netloc=f"{netloc}:{port}"))


async def drained(spool: Path, *, within_s: float) -> int:
    """Entries left in a spool file once it is empty, or after `within_s`."""
    deadline = time.monotonic() + within_s
    while (left := summarize(spool).backlog) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.5)
    return left


async def recorded(client: httpx.AsyncClient, url: str) -> float:
    """Reports the replica's recorder folded so far (its /metrics)."""
    text = (await client.get(f"{url}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("relay_ingress_recorder_records_total{")
    )


class StatusWatch:
    """Reads the status of accepted messages from both replicas while the stream runs; every message's
    statuses, in the order read, must only move up."""

    def __init__(self, client: httpx.AsyncClient, urls: list[str], accepted: dict[str, str]) -> None:
        self._client = client
        self._urls = urls
        self._accepted = accepted
        self.seen: dict[str, list[str]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        turn = 0
        while not stop.is_set():
            ids = list(self._accepted.values())
            for message_id in random.sample(ids, min(10, len(ids))):
                turn += 1
                status = await self.status(self._urls[turn % len(self._urls)], message_id)
                if status is not None:
                    self.seen.setdefault(message_id, []).append(status)
            await asyncio.sleep(0.2)

    async def status(self, url: str, message_id: str) -> str | None:
        with contextlib.suppress(httpx.HTTPError):
            response = await self._client.get(f"{url}/v1/messages/{message_id}")
            if response.status_code == 200:
                return str(response.json()["status"])
        return None

    def backwards(self) -> dict[str, list[str]]:
        return {
            message_id: statuses
            for message_id, statuses in self.seen.items()
            if any(store_rank(b) < store_rank(a) for a, b in itertools.pairwise(statuses))
        }


async def test_sigkill_of_one_of_two_replicas_loses_nothing_and_its_retries_keep_their_ids(
    tmp_path: Path, broker_url: str, postgres_url: str, deployment: Deployment
) -> None:
    up = deployment
    _, b_spool = spool_paths(tmp_path)
    b_port = free_port()
    b_url = f"http://127.0.0.1:{b_port}"
    urls = [up.api_url, b_url]
    proxy = TcpProxy(target_port=urlsplit(broker_url).port or 5672)
    await proxy.start()
    b_broker = via(broker_url, proxy.port)
    clock = ReceiptClock(dict(up.simulators))
    stop = asyncio.Event()
    submits = Submits()
    try:
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {up.key}"}, timeout=10.0) as client:
            watch = StatusWatch(client, urls, submits.accepted)
            with replica_b(up, broker_url=b_broker, port=b_port, log=tmp_path / "b.log") as b:
                await wait_until_ready(client, url=b_url, timeout_s=READY_WITHIN_S)
                tasks = [
                    asyncio.create_task(clock.run(stop)),
                    asyncio.create_task(watch.run(stop)),
                ]
                sending = asyncio.create_task(
                    submit_stream(
                        api_url=urls, key=up.key, count=COUNT, rate_per_s=RATE_PER_S, submits=submits
                    )
                )
                await asyncio.sleep(SLOW_CONFIRMS_AT_S)
                b_recorded = await recorded(client, b_url)
                proxy.reply_delay_s = CONFIRM_DELAY_S
                await asyncio.sleep(KILL_AT_S - SLOW_CONFIRMS_AT_S)
                kill_time = time.time()
                await asyncio.to_thread(sigkill, b)
                left_by_b = summarize(b_spool)
                await sending
            # B stays dead: the survivor drains its spool.
            b_spool_left = await drained(b_spool, within_s=DRAINED_WITHIN_S)
            lost = await delivered(up, clock, submits)
            stop.set()
            await asyncio.gather(*tasks)
            report("ingress replica SIGKILL", submits, clock, kill_time)
            a_recorded = await recorded(client, up.api_url)
            # B comes back on its port: either replica answers for every message from the shared store.
            proxy.reply_delay_s = 0.0
            with replica_b(up, broker_url=b_broker, port=b_port, log=tmp_path / "b-again.log"):
                await wait_until_ready(client, url=b_url, timeout_s=READY_WITHIN_S)
                not_terminal = {
                    url: [m for m in submits.accepted.values() if await watch.status(url, m) not in TERMINAL]
                    for url in urls
                }
    finally:
        stop.set()
        await proxy.close()

    ids = set(submits.accepted.values())
    references = {ref for sim in up.simulators.values() for ref in sim.references()}
    logs = (up.run_dir / "logs" / "ingress.log").read_text(errors="replace")  # replica A's
    print(
        f"B died with {left_by_b.backlog} spooled ({left_by_b.marked} marked); {len(submits.retried_for_s)} "
        f"retried, answered after at most {max(submits.retried_for_s.values(), default=0.0):.1f} s; "
        f"reports folded by B {b_recorded:.0f} (before its kill), by A {a_recorded:.0f}; "
        f"{sum(map(len, watch.seen.values()))} statuses read; {logs.count(TAKEN_OVER)} claims taken over"
    )
    assert not submits.gave_up, f"{len(submits.gave_up)} submits never got a 202"
    slow = {k: round(s, 1) for k, s in submits.retried_for_s.items() if s > RETRY_ANSWERED_WITHIN_S}
    assert not slow, f"retries answered after more than {RETRY_ANSWERED_WITHIN_S} s: {slow}"
    assert submits.retried_for_s, "the kill should have left requests without an answer"
    assert TAKEN_OVER in logs, "no retry took over a claim the dead replica left pending"
    assert len(ids) == len(submits.accepted), "two Idempotency-Keys were given one message id"
    assert not references - ids, f"{len(references - ids)} messages went out under ids no client was given"
    assert not lost, f"{len(lost)} of {len(ids)} accepted messages never reached a platform"
    assert duplicates_at_platforms(up.simulators) <= await marked_attempts_at(postgres_url)
    assert left_by_b.backlog > 0, "B should have died with entries in its spool"
    assert b_spool_left == 0, f"the survivor left {b_spool_left} entries in the dead replica's spool"
    assert not any(not_terminal.values()), {url: len(m) for url, m in not_terminal.items()}
    assert not watch.backwards(), f"statuses moved back: {watch.backwards()}"
    assert b_recorded > 0 and a_recorded > 0, "each replica's recorder takes its share of the events"
