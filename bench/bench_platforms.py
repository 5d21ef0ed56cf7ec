"""Each platform kind against the real program, two ways:

- adapter: the relay's own adapter alone, its requests running `--concurrency` at once: messages accepted
  per second and the latency of one message (median and 99th percentile). The SMPP adapter to the
  simulated SMSC and to Jasmin's SMPP server, the Jasmin adapter to Jasmin's HTTP API, the Kannel adapter to
  Kannel's sendsms.
- end to end: the whole relay in front of the platform (`bench.platform_e2e`): HTTP submit to `relay
  ingress`, the broker, one `relay worker` of a site of that kind, the platform's receipt (Kannel's
  fakesmsc, or the simulated SMSC behind Jasmin and behind the SMPP site): delivered messages per second.

Jasmin and Kannel rows are skipped (and say so) when those are not installed. Run:
`python -m bench.bench_platforms [--messages N] [--concurrency C] [--e2e-messages N] [--clients C]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.platform_e2e import Received, submit_to_receipt
from bench.raw_http import RawPool
from ops.harness.jasmin import PASSWORD, USERNAME, running_jasmin
from ops.harness.kannel import KannelInstance, find_binaries, running_kannel
from ops.harness.smsc import RunningSmsc, running_smsc
from shared.model import Job, new_message_id
from workers.platforms.base import Platform
from workers.platforms.jasmin import JasminPlatform
from workers.platforms.kannel import KannelPlatform
from workers.platforms.smpp import SmppPlatform
from workers.platforms.smpp_link import SmppLink


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    broker_url: str
    messages: int
    concurrency: int
    e2e_messages: int
    clients: int
    deadline_s: float


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
def _skipped_as(rows: dict[str, dict[str, Any]], *names: str) -> Iterator[None]:
    """Runs a block that needs an installed peer; a missing one becomes rows that say so."""
    try:
        yield
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        for name in names:
            for kind in rows.values():
                kind.setdefault(name, {"skipped": str(exc)})


@contextlib.asynccontextmanager
async def _smsc_receipts(smsc: RunningSmsc) -> AsyncIterator[Received]:
    """Messages the simulated SMSC took whole, over one keep-alive connection (httpx per poll costs CPU
    the relay would miss)."""
    async with RawPool(port=smsc.admin_port, key=None, size=1) as pool:

        async def count() -> int:
            _, body = await pool.get("/stats")
            return int(orjson.loads(body)["unique"])

        yield count


def _kannel_receipts(kannel: KannelInstance) -> Received:
    async def count() -> int:
        return len(await asyncio.to_thread(kannel.received))

    return count


async def _e2e(scratch: Path, options: Options, site: dict[str, Any], received: Received) -> dict[str, Any]:
    return await submit_to_receipt(
        scratch,
        broker_url=options.broker_url,
        site={**site, "timeout_s": 10.0},
        received=received,
        messages=options.e2e_messages,
        clients=options.clients,
        deadline_s=options.deadline_s,
    )


async def run(options: Options) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {"adapter": {}, "end_to_end": {}}
    adapter, e2e = rows["adapter"], rows["end_to_end"]
    messages, concurrency = options.messages, options.concurrency
    with tempfile.TemporaryDirectory() as raw, running_smsc() as smsc:
        scratch = Path(raw)
        adapter["smpp (simulated SMSC)"] = await _measure(
            _smpp(smsc.port, system_id="bench", password="bench", window=concurrency),
            messages=messages,
            concurrency=concurrency,
        )
        smpp_site = {"platform": "smpp", "host": "127.0.0.1", "port": smsc.port, "system_id": "bench"}
        async with _smsc_receipts(smsc) as taken:
            e2e["smpp (simulated SMSC)"] = await _e2e(
                scratch,
                options,
                # The window of the adapter row, so the rows differ only by the relay around the adapter.
                {**smpp_site, "password": "bench", "window": concurrency},
                taken,
            )
            with (
                _skipped_as(rows, "jasmin (HTTP API)", "smpp (Jasmin's SMPP server)"),
                running_jasmin(scratch / "jasmin", smsc_port=smsc.port) as jasmin,
            ):
                http = JasminPlatform(
                    url=jasmin.send_url, username=USERNAME, password=PASSWORD, timeout_s=10.0
                )
                adapter["jasmin (HTTP API)"] = await _measure(
                    http, messages=messages, concurrency=concurrency
                )
                adapter["smpp (Jasmin's SMPP server)"] = await _measure(
                    _smpp(jasmin.smpp_port, system_id=USERNAME, password=PASSWORD, window=concurrency),
                    messages=messages,
                    concurrency=concurrency,
                )
                jasmin_site = {"url": jasmin.send_url, "username": USERNAME, "password": PASSWORD}
                e2e["jasmin (HTTP API)"] = await _e2e(
                    scratch, options, {"platform": "jasmin", **jasmin_site}, taken
                )
        with _skipped_as(rows, "kannel (sendsms)"):
            binaries = find_binaries()
            if binaries is None:
                pytest.skip("Kannel is not installed")
            with running_kannel(scratch / "kannel", binaries) as kannel:
                adapter["kannel (sendsms)"] = await _measure(
                    KannelPlatform(
                        url=kannel.sendsms_url,
                        username=kannel.username,
                        password=kannel.password,
                        timeout_s=10.0,
                        concurrency=concurrency,
                    ),
                    messages=messages,
                    concurrency=concurrency,
                )
                kannel_site = {
                    "url": kannel.sendsms_url,
                    "username": kannel.username,
                    "password": kannel.password,
                }
                e2e["kannel (sendsms)"] = await _e2e(
                    scratch, options, {"platform": "kannel", **kannel_site}, _kannel_receipts(kannel)
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--messages", type=int, default=2000, help="per adapter row")
    parser.add_argument("--concurrency", type=int, default=32, help="adapter requests at once")
    parser.add_argument("--e2e-messages", type=int, default=2000, help="per end-to-end row")
    parser.add_argument("--clients", type=int, default=64, help="keep-alive clients of the end-to-end rows")
    parser.add_argument("--deadline-s", type=float, default=120.0, help="longest end-to-end row")
    parser.add_argument("--output", type=Path, default=Path("bench/results/platforms.json"))
    args = parser.parse_args()
    options = Options(
        broker_url=args.broker_url,
        messages=args.messages,
        concurrency=args.concurrency,
        e2e_messages=args.e2e_messages,
        clients=args.clients,
        deadline_s=args.deadline_s,
    )
    rows = asyncio.run(run(options))
    args.output.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
