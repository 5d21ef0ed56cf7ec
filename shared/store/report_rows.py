"""The reports table: platforms' delivery reports, inserted once each, and read beside the attempts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.model import DeliveryReport, ReportState
from shared.store.models import Report
from shared.store.upsert import dialect_insert

REPORTS = cast(Table, Report.__table__)


def utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


RAW_CHARS = 4000
PLATFORM_STATUS_CHARS = 32
ERROR_CODE_CHARS = 16
PLATFORM_ID_CHARS = 64

Fit = Callable[[Table, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class InsertedReport:
    message_id: str
    state: ReportState
    matched: bool
    report: DeliveryReport


@cache
def _insert(dialect_name: str) -> Any:
    return (
        dialect_insert(dialect_name, REPORTS)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(REPORTS.c.key)
    )


def report_row(report: DeliveryReport, *, matched: bool, key: str | None = None) -> dict[str, Any]:
    """The row of `report`; `key`: its `DeliveryReport.key`, when the caller has it (a hash of the
    report's text, not made twice)."""
    return {
        "key": report.key if key is None else key,
        "message_id": report.message_id,
        "attempt": report.attempt,
        "site": report.site,
        "platform": report.platform,
        "state": report.state.value,
        "platform_status": report.platform_status[:PLATFORM_STATUS_CHARS],
        "error_code": report.error_code[:ERROR_CODE_CHARS],
        "platform_id": report.platform_id[:PLATFORM_ID_CHARS],
        "at": utc(report.at) if report.at is not None else None,
        "received_at": utc(report.received_at),
        "raw": report.raw[:RAW_CHARS],
        "matched": matched,
    }


async def insert_reports(
    session: AsyncSession, reports: list[DeliveryReport], *, known: set[str], keep: Fit
) -> list[InsertedReport]:
    """Insert the reports not stored before; those inserted now. `known`: the message ids the store
    (or the batch) has a message of; a report naming another, or none, is kept unmatched."""
    rows: dict[str, tuple[DeliveryReport, dict[str, Any]]] = {}
    for report in reports:
        key = report.key
        if key not in rows:
            matched = bool(report.message_id) and report.message_id in known
            rows[key] = (report, keep(REPORTS, report_row(report, matched=matched, key=key)))
    # In one order in every recorder, so two inserting at once wait for each other, never deadlock.
    ordered = [rows[key][1] for key in sorted(rows)]
    inserted = await session.execute(_insert(session.get_bind().dialect.name), ordered)
    found = []
    for (key,) in inserted:
        report, row = rows[key]
        found.append(
            InsertedReport(
                message_id=report.message_id, state=report.state, matched=row["matched"], report=report
            )
        )
    return found


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportView:
    site: str
    attempt: int
    state: str
    platform_status: str
    error_code: str
    at: datetime | None
    received_at: datetime


async def reports_of(session: AsyncSession, message_id: str) -> list[ReportView]:
    rows = await session.execute(
        select(REPORTS)
        .where(REPORTS.c.message_id == message_id)
        .order_by(REPORTS.c.received_at, REPORTS.c.id)
    )
    return [
        ReportView(
            site=r.site,
            attempt=r.attempt,
            state=r.state,
            platform_status=r.platform_status,
            error_code=r.error_code,
            at=r.at,
            received_at=r.received_at,
        )
        for r in rows
    ]


async def unmatched_count(session: AsyncSession) -> int:
    found = await session.scalar(
        select(func.count()).select_from(REPORTS).where(REPORTS.c.matched.is_(False))
    )
    return int(found or 0)
