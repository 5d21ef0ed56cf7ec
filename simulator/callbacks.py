"""The http-json simulator's delivery reports: a JSON POST to each message's callback URL."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from datetime import UTC, datetime

import httpx

from shared.logs import get_logger
from simulator.reports import ReportOutcome, ReportSwitch

log = get_logger("relay.platform_sim")

POST_TIMEOUT_S = 5.0
_REF = re.compile(r"([?&])ref=[^&]*")


class CallbackReports:
    """Sends the reports the switch's plan asks for, each on a task of its own."""

    def __init__(self, switch: ReportSwitch | None = None) -> None:
        self.switch = switch or ReportSwitch()
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

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
        if self._client is not None:
            await self._client.aclose()

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
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=POST_TIMEOUT_S)
        sent_at = time.time()
        try:
            answer = await self._client.post(url, json=report)
            ok = answer.status_code == 200
        except httpx.HTTPError as exc:
            log.warning("report not taken", error=repr(exc))
            ok = False
        if ok:
            self.switch.sent += 1
            self.switch.log.append((str(report["reference"]), sent_at))
        else:
            self.switch.failed += 1
