"""Throughput of each platform kind through the relay's own adapter, against the real program: the SMPP
adapter to the simulated SMSC and to Jasmin's SMPP server, the Jasmin adapter to Jasmin's HTTP API, the
Kannel adapter to Kannel's sendsms. One row per platform: messages accepted per second with the adapter's
requests running `--concurrency` at once, and the latency of one message (median and 99th percentile).

This is the platform leg of the end-to-end path (worker to platform); the broker and store legs are in
`bench.bench_e2e`. Jasmin and Kannel rows are skipped (and say so) when those are not installed. Run:
`python -m bench.bench_platforms [--messages N] [--concurrency C]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from shared.model import Job, new_message_id
from tests.jasmin_harness import PASSWORD, USERNAME, running_jasmin
from tests.kannel_harness import running_kannel
from tests.smsc_sim_harness import running_smsc
from workers.platforms.base import Platform
from workers.platforms.jasmin import JasminPlatform
from workers.platforms.kannel import KannelPlatform
from workers.platforms.smpp import SmppPlatform
from workers.platforms.smpp_link import SmppLink

KANNEL_BINARIES = {
    "bearerbox": "/usr/sbin/bearerbox",
    "smsbox": "/usr/sbin/smsbox",
    "fakesmsc": "/usr/lib/kannel/test/fakesmsc",
}


def _installed(path: str) -> bool:
    return Path(path).exists()


def _job(number: int) -> Job:
    return Job(
        id=new_message_id(),
        tenant="bench",
        to="+31612345678",
        sender="Bench",
        body=f"benchmark message {number}",
        expires_at=time.time() + 3600,
    )


async def _measure(platform: Platform, *, messages: int, concurrency: int) -> dict[str, Any]:
    latencies_ms: list[float] = []
    outcomes: dict[str, int] = {}
    slots = asyncio.Semaphore(concurrency)

    async def one(number: int) -> None:
        async with slots:
            started = time.perf_counter()
            [result] = await platform.send([_job(number)])
            latencies_ms.append((time.perf_counter() - started) * 1000)
            outcomes[result.outcome.value] = outcomes.get(result.outcome.value, 0) + 1

    await platform.send([_job(-1)])  # bind or connect outside the clock
    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(messages)))
    elapsed_s = time.perf_counter() - started
    latencies_ms.sort()
    await platform.aclose()
    return {
        "messages": messages,
        "concurrency": concurrency,
        "accepted_per_s": round(outcomes.get("accepted", 0) / elapsed_s, 1),
        "latency_p50_ms": round(statistics.median(latencies_ms), 2),
        "latency_p99_ms": round(latencies_ms[int(len(latencies_ms) * 0.99) - 1], 2),
        "outcomes": outcomes,
    }


def _smpp(port: int, *, system_id: str, password: str, window: int) -> SmppPlatform:
    link = SmppLink(
        host="127.0.0.1",
        port=port,
        system_id=system_id,
        password=password,
        timeout_s=10.0,
        window=window,
        enquire_link_interval_s=30.0,
    )
    return SmppPlatform(link=link)


@contextlib.contextmanager
def _skipped_as(rows: dict[str, Any], *names: str) -> Iterator[None]:
    """Runs a block that needs an installed peer; a missing one becomes a row that says so."""
    try:
        yield
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        for name in names:
            rows[name] = {"skipped": str(exc)}


async def run(*, messages: int, concurrency: int) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch, running_smsc() as smsc:
        rows["smpp (simulated SMSC)"] = await _measure(
            _smpp(smsc.port, system_id="bench", password="bench", window=concurrency),
            messages=messages,
            concurrency=concurrency,
        )
        with (
            _skipped_as(rows, "jasmin (HTTP API)", "smpp (Jasmin's SMPP server)"),
            running_jasmin(Path(scratch) / "jasmin", smsc_port=smsc.port) as jasmin,
        ):
            http = JasminPlatform(url=jasmin.send_url, username=USERNAME, password=PASSWORD, timeout_s=10.0)
            rows["jasmin (HTTP API)"] = await _measure(http, messages=messages, concurrency=concurrency)
            rows["smpp (Jasmin's SMPP server)"] = await _measure(
                _smpp(jasmin.smpp_port, system_id=USERNAME, password=PASSWORD, window=concurrency),
                messages=messages,
                concurrency=concurrency,
            )
        with _skipped_as(rows, "kannel (sendsms)"):
            if not all(map(_installed, KANNEL_BINARIES.values())):
                pytest.skip("Kannel is not installed")
            with running_kannel(Path(scratch) / "kannel", KANNEL_BINARIES) as kannel:
                adapter = KannelPlatform(
                    url=kannel.sendsms_url,
                    username=kannel.username,
                    password=kannel.password,
                    timeout_s=10.0,
                    concurrency=concurrency,
                )
                rows["kannel (sendsms)"] = await _measure(adapter, messages=messages, concurrency=concurrency)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--output", type=Path, default=Path("bench/results/platforms.json"))
    options = parser.parse_args()
    rows = asyncio.run(run(messages=options.messages, concurrency=options.concurrency))
    options.output.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
