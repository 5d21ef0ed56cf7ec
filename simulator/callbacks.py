"""The http-json simulator's delivery reports: a JSON POST to each message's callback URL.

One request per report, as real platforms send them, over kept-alive connections (`shared.http1`, a few
per origin): on the machine the benchmarks run on, this process's CPU competes with the relay's, and an
httpx request cost about 1.5 ms of it.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from datetime import UTC, datetime

import orjson

from shared.http1 import Http1Client, Origin, TransportFailure
from shared.logs import get_logger
from simulator.reports import ReportOutcome, ReportSwitch

log = get_logger("relay.platform_sim")

POST_TIMEOUT_S = 5.0
CONNECTIONS_PER_ORIGIN = 8
_JSON = [("Content-Type", "application/json")]
_REF = re.compile(r"([?&])ref=[^&]*")


class CallbackReports:
    """Sends the reports the switch's plan asks for, each on a task of its own."""

    def __init__(self, switch: ReportSwitch | None = None) -> None:
        self.switch = switch or ReportSwitch()
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._clients: dict[tuple[str, str, int], Http1Client] = {}

    def schedule(self, url: str, *, reference: str) -> None:
        copies = self.switch.copies()
        if not copies:
            return
        task = asyncio.create_task(self._send(url, reference, copies, self.switch.plan.unknown))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()

    async def _send(self, url: str, reference: str, copies: int, unknown: bool) -> None:
        plan = self.switch.plan
        if plan.delay_ms:
            await asyncio.sleep(plan.delay_ms / 1000)
        delivered = plan.outcome is ReportOutcome.DELIVERED
        report: dict[str, object] = {
            "id": f"sim-{next(self._ids):08d}",
            "reference": reference,
            "status": "DELIVERED" if delivered else "UNDELIVERED",
            "error": 0 if delivered else 1,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        for _ in range(copies):
            await self._post(url, report)
        if unknown:
            # An id this platform never gave out, and no reference the relay gave it.
            stray = {**report, "id": f"sim-unknown-{next(self._ids):08d}", "reference": ""}
            await self._post(_REF.sub(r"\1ref=", url), stray)

    async def _post(self, url: str, report: dict[str, object]) -> None:
        try:
            origin = Origin.parse(url)
        except ValueError as exc:
            log.warning("report not sent", error=str(exc))
            self.switch.failed += 1
            return
        key = (origin.scheme, origin.host, origin.port)
        client = self._clients.get(key)
        if client is None:
            client = Http1Client(url=url, timeout_s=POST_TIMEOUT_S, size=CONNECTIONS_PER_ORIGIN)
            self._clients[key] = client
        sent_at = time.time()
        try:
            answer = await client.request("POST", origin.path, headers=_JSON, body=orjson.dumps(report))
            ok = answer.status == 200
        except TransportFailure as exc:
            log.warning("report not taken", error=repr(exc))
            ok = False
        if ok:
            self.switch.sent += 1
            self.switch.log.append((str(report["reference"]), sent_at))
        else:
            self.switch.failed += 1
