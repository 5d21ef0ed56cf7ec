"""Submit throughput of the drop-in APIs (CM, Kannel, Twilio) against the native API, in one run.

Single messages from 64 keep-alive clients, as in the submit benchmark's single phase, through each API in
turn: native `POST /v1/messages`, CM `POST /v1.0/message`, Kannel `GET /cgi-bin/sendsms`, Twilio `POST
/2010-04-01/Accounts/{sid}/Messages.json`. Phases run in rounds (3 by default), the order of the APIs turning
each round, and each API's ratio is the median over the rounds of its rate over that round's native rate
(target: at least 0.8). The ingress is a `relay ingress` child process with a scratch prefix, store and
spool, removed afterwards. Run: `python -m bench.bench_compat [--json] [--quick]`. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import shutil
import statistics
import sys
import tempfile
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import uvloop

from bench.bench_submit import BROKER_URL, CLIENTS, closed_loop, ingress_process, summary, wait_ready
from bench.raw_http import RawConnection
from ops.harness.cleanup import delete_broker_names
from ops.harness.processes import free_port
from shared.settings import Settings, StoreSettings
from shared.store.accounts import ensure_account_sid
from shared.store.api_keys import create_key
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.migrate import upgrade

TARGET_RATIO = 0.8
APIS = ("native", "cm", "kannel", "twilio")
TO = "+31612345678"


class Pool:
    """Keep-alive connections that all send the same request head (its auth and content type)."""

    def __init__(self, *, port: int, head: str, size: int) -> None:
        self._port = port
        self._head = head.encode()
        self._size = size
        self._idle: asyncio.Queue[RawConnection] = asyncio.Queue()
        self._all: list[RawConnection] = []

    async def __aenter__(self) -> Pool:
        for _ in range(self._size):
            reader, writer = await asyncio.open_connection("127.0.0.1", self._port)
            connection = RawConnection(reader, writer, self._head)
            self._all.append(connection)
            self._idle.put_nowait(connection)
        return self

    async def __aexit__(self, *_: object) -> None:
        for connection in self._all:
            connection.close()

    async def request(self, method: bytes, path: str, body: bytes) -> tuple[int, bytes]:
        connection = await self._idle.get()
        try:
            return await connection.request(method, path, body)
        finally:
            self._idle.put_nowait(connection)


def head(port: int, *, content_type: str, authorization: str | None = None) -> str:
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    return f"Host: 127.0.0.1:{port}\r\n{auth}Content-Type: {content_type}\r\nConnection: keep-alive\r\n"


Build = Callable[[int], tuple[bytes, str, bytes]]


def apis(port: int, *, key: str, sid: str) -> dict[str, tuple[str, Build, int]]:
    """Per API: the request head of its connections, its request for message n (method, path and body)
    and its accepted status."""

    def native(n: int) -> tuple[bytes, str, bytes]:
        return (
            b"POST",
            "/v1/messages",
            orjson.dumps({"to": TO, "from": "Bench", "body": f"benchmark message {n}"}),
        )

    def cm(n: int) -> tuple[bytes, str, bytes]:
        msg = {
            "allowedChannels": ["SMS"],
            "from": "Bench",
            "to": [{"number": "0031612345678"}],
            "body": {"type": "AUTO", "content": f"benchmark message {n}"},
        }
        return (
            b"POST",
            "/v1.0/message",
            orjson.dumps({"messages": {"authentication": {"producttoken": key}, "msg": [msg]}}),
        )

    def kannel(n: int) -> tuple[bytes, str, bytes]:
        fields = {
            "username": "bench",
            "password": key,
            "to": TO,
            "from": "Bench",
            "text": f"benchmark message {n}",
        }
        return b"GET", f"/cgi-bin/sendsms?{urllib.parse.urlencode(fields)}", b""

    def twilio(n: int) -> tuple[bytes, str, bytes]:
        body = urllib.parse.urlencode({"To": TO, "From": "Bench", "Body": f"benchmark message {n}"}).encode()
        return b"POST", f"/2010-04-01/Accounts/{sid}/Messages.json", body

    basic = "Basic " + base64.b64encode(f"{sid}:{key}".encode()).decode()
    return {
        "native": (head(port, content_type="application/json", authorization=f"Bearer {key}"), native, 202),
        "cm": (head(port, content_type="application/json"), cm, 200),
        "kannel": (head(port, content_type="text/plain"), kannel, 202),
        "twilio": (
            head(port, content_type="application/x-www-form-urlencoded", authorization=basic),
            twilio,
            201,
        ),
    }


def cpu_s(server: psutil.Process) -> float:
    times = server.cpu_times()
    return float(times.user + times.system)


async def phase(
    port: int,
    api: str,
    how: tuple[str, Build, int],
    count: int,
    answers: Counter[str],
    server: psutil.Process,
) -> dict[str, Any]:
    """`count` messages through one API from fresh keep-alive connections (idle ones would be closed by
    the server's keep-alive timeout while the other APIs run). The requests are built beforehand, so the
    clients' share of the CPU is the same for every API."""
    request_head, build, accepted_status = how
    warm_up = 100
    requests = [build(n) for n in range(warm_up + count)]

    async with Pool(port=port, head=request_head, size=CLIENTS) as pool:

        async def one(n: int) -> int:
            status, body = await pool.request(*requests[n])
            answers[f"{api} {status}"] += 1
            if status != accepted_status and answers[f"{api} {status}"] == 1:
                print(f"{api} answered {status}: {body[:300]!r}", file=sys.stderr)
            return 1 if status == accepted_status else 0

        await closed_loop(warm_up, CLIENTS, one)  # connections, key and SID caches
        cpu_before = cpu_s(server)
        elapsed, latencies, accepted = await closed_loop(count, CLIENTS, lambda n: one(warm_up + n))
        cpu_ms = (cpu_s(server) - cpu_before) * 1000
    per_message = round(cpu_ms / accepted, 3) if accepted else None
    return {**summary(accepted, elapsed, latencies), "server_cpu_ms_per_message": per_message}


async def phases(
    port: int, *, key: str, sid: str, count: int, rounds: int, server: psutil.Process
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as probe:
        await wait_ready(probe)
    answers: Counter[str] = Counter()
    how = apis(port, key=key, sid=sid)
    done: list[dict[str, Any]] = []
    for turn in range(rounds):
        order = APIS[turn % len(APIS) :] + APIS[: turn % len(APIS)]
        done.append({api: await phase(port, api, how[api], count, answers, server) for api in order})
    return {"rounds": done, "answers": dict(answers)}


async def scratch_store(store: StoreSettings) -> tuple[str, str]:
    """Migrate a scratch store; a new API key of tenant "bench" and its account SID."""
    await asyncio.to_thread(upgrade, store)
    engine = make_engine(store)
    try:
        sessions = make_sessionmaker(engine)
        key, _ = await create_key(sessions, tenant="bench")
        sid = await ensure_account_sid(sessions, tenant="bench")
    finally:
        await engine.dispose()
    return key, sid


async def main_async(quick: bool, rounds: int) -> dict[str, Any]:
    count = 1_250 if quick else 5_000
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-compat-"))
    try:
        key, sid = await scratch_store(StoreSettings(url=f"sqlite+aiosqlite:///{workdir / 'relay.db'}"))
        port = free_port()
        with ingress_process(workdir, prefix=prefix, port=port, processes=1) as proc:
            server = psutil.Process(proc.pid)
            report = await phases(port, key=key, sid=sid, count=count, rounds=rounds, server=server)
    finally:
        await delete_broker_names(BROKER_URL, Settings(broker={"url": BROKER_URL, "prefix": prefix}))
        shutil.rmtree(workdir, ignore_errors=True)
    done = report["rounds"]
    ratios = {
        api: round(statistics.median(r[api]["per_s"] / r["native"]["per_s"] for r in done), 3)
        for api in APIS[1:]
    }
    report.update(
        quick=quick,
        requests_per_phase=count,
        concurrency=CLIENTS,
        per_s={api: statistics.median(r[api]["per_s"] for r in done) for api in APIS},
        server_cpu_ms_per_message={
            api: statistics.median(r[api]["server_cpu_ms_per_message"] or 0.0 for r in done) for api in APIS
        },
        ratios_to_native=ratios,
        ratios_are="the median over the rounds of each round's rate over its native rate",
        targets={f"{api} >= {TARGET_RATIO} x native": ratio >= TARGET_RATIO for api, ratio in ratios.items()},
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON report")
    parser.add_argument("--quick", action="store_true", help="a quarter of the requests, one round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the four APIs")
    args = parser.parse_args()
    # The clients run on uvloop, the relay's own loop, so they take less of the shared CPU.
    report = uvloop.run(main_async(args.quick, 1 if args.quick else args.rounds))
    if not args.json:
        print("drop-in API benchmark (numbers are noisy when other work shares the CPU):", file=sys.stderr)
        for api in APIS:
            ratio = report["ratios_to_native"].get(api)
            shown = f"{ratio:.2f} x native" if ratio is not None else "-"
            cpu_ms = report["server_cpu_ms_per_message"][api]
            rate = report["per_s"][api]
            print(
                f"  {api:8} {rate:8.0f}/s  {shown:>14}  ingress CPU {cpu_ms:.3f} ms/message", file=sys.stderr
            )
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
