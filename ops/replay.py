"""Replaying dead letters: claim in the store, publish with confirms, and undo the claim if the publish fails.

The order is what makes a replay safe. Claiming first (an UPDATE that only one caller can win) means two
operators cannot publish the same id twice; undoing the claim when the broker does not confirm means a
failed replay can simply be run again. Only a crash between claim and publish leaves a row marked replayed
that was not published: ``relay dead replay --force ID`` sends it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.broker import ConfirmedPublisher
from shared.envelope import H_ATTEMPT, H_ORIGIN, H_REPLAY, H_SITE, H_SITE_ATTEMPT, encode_job
from shared.errors import RelayError
from shared.model import Job
from shared.store import dead_letters
from shared.store.dead_letters import ReplayClaim
from shared.store.models import DeadLetter
from shared.topology import jobs_exchange


@dataclass(slots=True, kw_only=True)
class ReplayResult:
    replayed: list[tuple[str, str]] = field(default_factory=list)  # (id, site)
    skipped: list[str] = field(default_factory=list)  # replayed before, or claimed by someone else
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, why): the broker did not take it
    refused: list[tuple[str, str]] = field(default_factory=list)  # (id, why): cannot be replayed as it is


def job_from_row(job: dict[str, object]) -> Job:
    try:
        return Job(**job)  # type: ignore[arg-type]
    except TypeError as exc:
        raise RelayError(f"stored job is malformed: {exc}") from None


def refreshed(job: Job, *, now_s: float, default_validity_s: int) -> Job:
    """A replay of an expired job gets a fresh validity of its original length, counted from now.

    Without it the first worker to see the replay would dead-letter it again as `expired` at once.
    A job still valid keeps its expiry.
    """
    if job.expires_at > now_s:
        return job
    validity_s = job.expires_at - job.accepted_at
    if validity_s <= 0:
        validity_s = default_validity_s
    return replace(job, expires_at=now_s + validity_s)


def replay_headers(*, site: str, replay_number: int) -> dict[str, object]:
    return {H_ATTEMPT: 0, H_SITE_ATTEMPT: 0, H_SITE: site, H_ORIGIN: site, H_REPLAY: replay_number}


class Replayer:
    """Replays dead-letter rows a page at a time: one claim transaction, concurrent confirmed publishes."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        publisher: ConfirmedPublisher,
        prefix: str,
        to_site: str | None,
        known_sites: frozenset[str],
        force: bool,
        default_validity_s: int,
        on_progress: Callable[[int], None] = lambda _: None,
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._exchange = jobs_exchange(prefix)
        self._to_site = to_site
        self._known_sites = known_sites
        self._force = force
        self._default_validity_s = default_validity_s
        self._on_progress = on_progress

    async def replay(self, rows: Sequence[DeadLetter], result: ReplayResult) -> None:
        jobs: dict[str, Job] = {}
        valid_rows = []
        for row in rows:
            target = self._to_site or row.site
            if target not in self._known_sites:
                # Unroutable: the broker would return it. Say so rather than claim and undo.
                result.refused.append((row.message_id, f"site {target!r} is not configured: give --to-site"))
                continue
            try:
                jobs[row.message_id] = job_from_row(row.job)
            except RelayError as exc:
                result.refused.append((row.message_id, str(exc)))
                continue
            valid_rows.append(row)
        now_s = time.time()
        async with self._sessions.begin() as session:
            claims = await dead_letters.claim(session, valid_rows, to_site=self._to_site, force=self._force)
            fresh = {
                c.message_id: refreshed(
                    jobs[c.message_id], now_s=now_s, default_validity_s=self._default_validity_s
                )
                for c in claims
            }
            await dead_letters.mark_messages_accepted(
                session, {mid: datetime.fromtimestamp(job.expires_at, UTC) for mid, job in fresh.items()}
            )
        claimed_ids = {c.message_id for c in claims}
        result.skipped.extend(row.message_id for row in valid_rows if row.message_id not in claimed_ids)
        self._on_progress(len(rows) - len(claims))  # refused and skipped ones are done too

        outcomes = await asyncio.gather(
            *(self._publish(item, fresh[item.message_id]) for item in claims), return_exceptions=True
        )
        undo: list[ReplayClaim] = []
        for item, outcome in zip(claims, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                undo.append(item)
                result.failed.append((item.message_id, str(outcome)))
            else:
                result.replayed.append((item.message_id, item.to_site))
        if undo:
            async with self._sessions.begin() as session:
                await dead_letters.unclaim(session, undo)

    async def _publish(self, item: ReplayClaim, job: Job) -> None:
        try:
            await self._publisher.publish(
                encode_job(job),
                exchange=self._exchange,
                routing_key=item.to_site,
                message_id=item.message_id,
                headers=replay_headers(site=item.to_site, replay_number=item.replay_number),
            )
        finally:
            self._on_progress(1)
