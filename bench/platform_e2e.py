"""The whole relay in front of one real platform: HTTP submit to the platform's receipt.

`relay ingress` and one `relay worker` (each a process of its own) for one site of the platform's kind;
keep-alive clients submit one message per request; the figure is delivered messages per second from the
first submit to the platform's receipt of the last accepted message (receipts polled every 50 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from bench.bench_submit import migrated_store_key
from bench.raw_http import RawPool, send_until_received
from ops.harness.deployment import delete_topology, write_toml
from ops.harness.jobs import JobPublisher, wait_for_consumers
from ops.harness.processes import RELAY, free_port, spawned, wait_for_port
from shared.settings import StoreSettings

SITE = "p"
POLL_S = 0.05
WARM_UP_TIMEOUT_S = 60.0
SETTLED_S = 1.0

# How many messages the platform has received so far (only ever grows while a run lasts).
Received = Callable[[], Awaitable[int]]


def _config(scratch: Path, *, broker_url: str, prefix: str, site: Mapping[str, Any], port: int) -> Path:
    return write_toml(
        scratch / f"{prefix}.toml",
        {
            "broker": {"url": broker_url, "prefix": prefix, "confirm_timeout_s": 5.0},
            "store": {"url": f"sqlite+aiosqlite:///{scratch / prefix}.db"},
            "ingress": {"port": port, "spool_path": str(scratch / f"{prefix}.spool.db")},
            "log": {"level": "WARNING", "json": True},
            "worker": {"concurrency": 64, "metrics_port": 0, "grace_s": 5.0},
            f"sites.{SITE}": site,
        },
    )


async def _until(received: Received, count: int, *, timeout_s: float) -> int:
    deadline = time.perf_counter() + timeout_s
    now = await received()
    while now < count and time.perf_counter() < deadline:
        await asyncio.sleep(POLL_S)
        now = await received()
    return now


async def _settled(received: Received) -> int:
    """The platform's count once it has not moved for SETTLED_S (or after WARM_UP_TIMEOUT_S)."""
    deadline = time.perf_counter() + WARM_UP_TIMEOUT_S
    count, since = await received(), time.perf_counter()
    while time.perf_counter() - since < SETTLED_S and time.perf_counter() < deadline:
        await asyncio.sleep(POLL_S)
        now = await received()
        if now != count:
            count, since = now, time.perf_counter()
    return count


async def submit_to_receipt(
    scratch: Path,
    *,
    broker_url: str,
    site: Mapping[str, Any],
    received: Received,
    messages: int,
    clients: int,
    deadline_s: float,
) -> dict[str, Any]:
    """Run the relay for `site` (a `[sites.p]` table) and measure `messages` submits through it."""
    prefix = f"benchp{uuid.uuid4().hex[:8]}"
    port = free_port()
    config = _config(scratch, broker_url=broker_url, prefix=prefix, site=site, port=port)
    key = await migrated_store_key(StoreSettings(url=f"sqlite+aiosqlite:///{scratch / prefix}.db"))
    try:
        with contextlib.ExitStack() as stack:
            for command in (["ingress"], ["worker", "--site", SITE, "--metrics-port", "0"]):
                log = scratch / f"{prefix}-{command[0]}.log"
                stack.enter_context(spawned([*RELAY, "--config", str(config), *command], log=log))
            wait_for_port(port, timeout_s=30)
            async with JobPublisher(config=config) as jobs:
                await wait_for_consumers(jobs, {SITE: 1}, timeout_s=60)
            async with RawPool(port=port, key=key, size=clients) as pool:
                return await _measure(
                    pool, received, messages=messages, clients=clients, deadline_s=deadline_s
                )
    finally:
        await delete_topology(broker_url, config)


async def _measure(
    pool: RawPool, received: Received, *, messages: int, clients: int, deadline_s: float
) -> dict[str, Any]:
    async def submit(text: str) -> bool:
        body = orjson.dumps({"to": "+31612345678", "from": "Bench", "body": text})
        status, _ = await pool.post("/v1/messages", body)
        return status == 202

    # What the platform still delivers of earlier traffic (Jasmin drains a queue of its own) is not this
    # run's; the session binds and the connector connects outside the clock.
    start = await _settled(received)
    if not await submit("warm-up") or await _until(received, start + 1, timeout_s=WARM_UP_TIMEOUT_S) <= start:
        raise RuntimeError("the warm-up message never reached the platform")
    start = await _settled(received)

    gate = asyncio.Semaphore(clients)

    async def one(n: int) -> bool:
        async with gate:
            return await submit(f"e2e {n}")

    async def delivered_since_start() -> int:
        return await received() - start

    flow = await send_until_received(
        (one(n) for n in range(messages)), delivered_since_start, deadline_s=deadline_s, poll_s=POLL_S
    )
    return {
        "what": "HTTP submit -> ingress -> broker -> worker -> the platform's receipt",
        "messages": messages,
        "clients": clients,
        "accepted": flow.accepted,
        "delivered": flow.received,
        "seconds": round(flow.elapsed_s, 2),
        "delivered_per_s": round(flow.received / flow.elapsed_s, 1),
        "complete": flow.accepted == messages and flow.received >= messages,
    }
