"""Dead letters in the store's fold: inserted once, renewed when a replayed one dies again."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from shared.model import DeadReason, Job
from shared.store.models import DeadLetter
from shared.store.upsert import dialect_insert

DEAD_LETTERS = cast(Table, DeadLetter.__table__)
DETAIL_CHARS = 2000

Fit = Callable[[Table, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadReport:
    job: Job
    site: str
    reason: DeadReason
    detail: str
    attempts: int

    @classmethod
    def from_envelope(cls, job: Job, verdict: dict[str, Any]) -> DeadReport:
        return cls(
            job=job,
            site=str(verdict.get("site", "")),
            reason=DeadReason(verdict["reason"]),
            detail=str(verdict.get("detail", "")),
            attempts=int(verdict.get("attempts", 0)),
        )


@cache
def _insert_dead_letters(dialect_name: str) -> Any:
    return dialect_insert(dialect_name, DEAD_LETTERS).on_conflict_do_nothing(index_elements=["message_id"])


_RENEW_DEAD_LETTERS = (
    update(DEAD_LETTERS)
    .where(DEAD_LETTERS.c.message_id == bindparam("b_message_id"), DEAD_LETTERS.c.replayed_at.is_not(None))
    .values(
        site=bindparam("b_site"),
        reason=bindparam("b_reason"),
        detail=bindparam("b_detail"),
        attempts=bindparam("b_attempts"),
        job=bindparam("b_job", type_=DEAD_LETTERS.c.job.type),
        dead_at=bindparam("b_dead_at", type_=DEAD_LETTERS.c.dead_at.type),
        replayed_at=None,
    )
)


async def fold_dead(session: AsyncSession, dead: list[DeadReport], keep: Fit, now: datetime) -> int:
    """Insert new dead letters, renew replayed ones that died again; how many were added."""
    added = 0
    found = await session.execute(
        select(DEAD_LETTERS.c.message_id, DEAD_LETTERS.c.replayed_at).where(
            DEAD_LETTERS.c.message_id.in_({d.job.id for d in dead})
        )
    )
    # message id -> replayed_at (None: dead and not replayed)
    replayed: dict[str, datetime | None] = dict(found.all())
    new_letters: list[dict[str, Any]] = []
    renewed: list[dict[str, Any]] = []
    for report in sorted(dead, key=lambda d: d.job.id):
        job_id = report.job.id
        letter = keep(
            DEAD_LETTERS,
            {
                "message_id": job_id,
                "tenant": report.job.tenant,
                "site": report.site,
                "reason": report.reason.value,
                "detail": report.detail[:DETAIL_CHARS],
                "attempts": report.attempts,
                "job": asdict(report.job),  # whole, as it travelled: a replay needs nothing else
                "dead_at": now,
            },
        )
        if job_id not in replayed:
            new_letters.append({**letter, "replay_count": 0})
        elif replayed[job_id] is not None:
            # Replayed and dead again: it is a dead letter once more, its replay count kept.
            renewed.append({f"b_{name}": value for name, value in letter.items() if name != "tenant"})
        else:
            continue
        replayed[job_id] = None
        added += 1
    if new_letters:
        await session.execute(_insert_dead_letters(session.get_bind().dialect.name), new_letters)
    if renewed:
        await session.execute(_RENEW_DEAD_LETTERS, renewed)
    return added
