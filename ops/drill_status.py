"""What the store says about the drill's messages, through the status API: their status (for ids no
simulator received) and their ambiguous attempts; and the wait until every message has settled."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from ops.drill_sims import ReceiptTracker
from ops.drill_verdict import SETTLED_FAILURES, TAKEN

STATUS_CONCURRENCY = 16
QUIET_S = 3.0  # no new receipt for this long: ask the store about the ids still missing


async def fetch_message(
    client: httpx.AsyncClient, *, url: str, key: str, message_id: str
) -> dict[str, Any] | None:
    try:
        response = await client.get(
            f"{url}/v1/messages/{message_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10.0
        )
        answer = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return answer if response.status_code == 200 and isinstance(answer, dict) else None


def ambiguous_in(message: dict[str, Any]) -> int:
    """Attempts of one message that may have left a copy at a platform (ambiguous, or marked a possible
    duplicate: a redelivered or resent job), from its attempt history, else its counter."""
    history = message.get("history")
    if isinstance(history, list):
        return sum(
            1
            for a in history
            if isinstance(a, dict)
            and (a.get("outcome") == "ambiguous" or a.get("possible_duplicate") is True)
        )
    counter = message.get("possible_duplicates")
    return counter if isinstance(counter, int) else 0


class MessageStatuses:
    """The status of each drill message the drill asked the ingress about."""

    def __init__(self, *, client: httpx.AsyncClient, url: str, key: str) -> None:
        self._client = client
        self._url = url
        self._key = key
        self.statuses: dict[str, str] = {}

    async def _fetch_all(self, ids: list[str]) -> dict[str, dict[str, Any] | None]:
        slots = asyncio.Semaphore(STATUS_CONCURRENCY)

        async def one(message_id: str) -> tuple[str, dict[str, Any] | None]:
            async with slots:
                return message_id, await fetch_message(
                    self._client, url=self._url, key=self._key, message_id=message_id
                )

        return dict(await asyncio.gather(*(one(m) for m in ids)))

    async def update(self, ids: list[str]) -> None:
        for message_id, message in (await self._fetch_all(ids)).items():
            if message is not None and isinstance(message.get("status"), str):
                self.statuses[message_id] = message["status"]

    async def ambiguous_attempts(self, ids: list[str]) -> int | None:
        """Ambiguous attempts of these messages in all; None if the ingress told nothing about them."""
        messages = await self._fetch_all(ids)
        known = [m for m in messages.values() if m is not None]
        for message_id, message in messages.items():
            if message is not None and isinstance(message.get("status"), str):
                self.statuses.setdefault(message_id, message["status"])
        return sum(ambiguous_in(m) for m in known) if known else None

    async def settle(
        self,
        tracker: ReceiptTracker,
        *,
        accepted: list[str],
        timeout_s: float,
        delivered_counts: bool,
        say: Callable[[str], None],
    ) -> None:
        """Wait until every accepted id was received or reached a terminal failure, or `timeout_s` passes.

        With `delivered_counts` (a real platform, whose receipts the drill cannot see) `sent` (and what a
        delivery report made of it) counts as arrived.
        """
        final = SETTLED_FAILURES | TAKEN if delivered_counts else SETTLED_FAILURES
        deadline = time.monotonic() + timeout_s
        say(f"waiting up to {timeout_s:g} s for {len(accepted)} messages to settle")
        asked_at_change = -1.0
        while time.monotonic() < deadline:
            received = tracker.received_ids()
            missing = [m for m in accepted if m not in received and self.statuses.get(m) not in final]
            if not missing:
                return
            quiet = time.time() - tracker.last_change_at >= QUIET_S
            if quiet and asked_at_change != tracker.last_change_at:
                asked_at_change = tracker.last_change_at
                await self.update(missing)
            await asyncio.sleep(0.5)
        received = tracker.received_ids()
        await self.update([m for m in accepted if m not in received])
