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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop

from bench.bench_submit import BROKER_URL, CLIENTS, closed_loop, ingress_process, summary, wait_ready
from bench.raw_http import RawConnection
from shared.settings import Settings, StoreSettings
from shared.store.accounts import ensure_account_sid
from shared.store.api_keys import create_key
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.migrate import upgrade
from tests.helpers import delete_broker_names, free_port

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


Sender = Callable[[int], Awaitable[int]]


def senders(pools: dict[str, Pool], *, key: str, sid: str, answers: Counter[str]) -> dict[str, Sender]:
    """One function per API that sends message n and returns 1 when it was accepted."""

    def counted(api: str, status: int, body: bytes, accepted: int) -> int:
        answers[f"{api} {status}"] += 1
        if status != accepted and answers[f"{api} {status}"] == 1:
            print(f"{api} answered {status}: {body[:300]!r}", file=sys.stderr)
        return 1 if status == accepted else 0

    async def native(n: int) -> int:
        body = orjson.dumps({"to": TO, "from": "Bench", "body": f"benchmark message {n}"})
        status, answer = await pools["native"].request(b"POST", "/v1/messages", body)
        return counted("native", status, answer, 202)

    async def cm(n: int) -> int:
        msg = {
            "allowedChannels": ["SMS"],
            "from": "Bench",
            "to": [{"number": "0031612345678"}],
            "body": {"type": "AUTO", "content": f"benchmark message {n}"},
        }
        body = orjson.dumps({"messages": {"authentication": {"producttoken": key}, "msg": [msg]}})
        status, answer = await pools["cm"].request(b"POST", "/v1.0/message", body)
        return counted("cm", status, answer, 200)

    async def kannel(n: int) -> int:
        query = urllib.parse.urlencode(
            {
                "username": "bench",
                "password": key,
                "to": TO,
                "from": "Bench",
                "text": f"benchmark message {n}",
            }
        )
        status, answer = await pools["kannel"].request(b"GET", f"/cgi-bin/sendsms?{query}", b"")
        return counted("kannel", status, answer, 202)

    async def twilio(n: int) -> int:
        body = urllib.parse.urlencode({"To": TO, "From": "Bench", "Body": f"benchmark message {n}"}).encode()
        status, answer = await pools["twilio"].request(
            b"POST", f"/2010-04-01/Accounts/{sid}/Messages.json", body
        )
        return counted("twilio", status, answer, 201)

    return {"native": native, "cm": cm, "kannel": kannel, "twilio": twilio}


async def measure(count: int, send: Sender) -> dict[str, Any]:
    elapsed, latencies, accepted = await closed_loop(count, CLIENTS, send)
    return summary(accepted, elapsed, latencies)


async def phases(port: int, *, key: str, sid: str, count: int, rounds: int) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as probe:
        await wait_ready(probe)
    basic = "Basic " + base64.b64encode(f"{sid}:{key}".encode()).decode()
    heads = {
        "native": head(port, content_type="application/json", authorization=f"Bearer {key}"),
        "cm": head(port, content_type="application/json"),
        "kannel": head(port, content_type="text/plain"),
        "twilio": head(port, content_type="application/x-www-form-urlencoded", authorization=basic),
    }
    answers: Counter[str] = Counter()
    pools = {api: Pool(port=port, head=heads[api], size=CLIENTS) for api in APIS}
    for pool in pools.values():
        await pool.__aenter__()
    try:
        send = senders(pools, key=key, sid=sid, answers=answers)
        for api in APIS:  # warm-up: connections, key and SID caches, page cache
            await closed_loop(200, CLIENTS, send[api])
        done: list[dict[str, Any]] = []
        for turn in range(rounds):
            order = APIS[turn % len(APIS) :] + APIS[: turn % len(APIS)]
            done.append({api: await measure(count, send[api]) for api in order})
    finally:
        for pool in pools.values():
            await pool.__aexit__()
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
        with ingress_process(workdir, prefix=prefix, port=port, processes=1):
            report = await phases(port, key=key, sid=sid, count=count, rounds=rounds)
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
            print(f"  {api:8} {report['per_s'][api]:8.0f} messages/s  {shown}", file=sys.stderr)
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
