"""Delivery reports folded into a real (migrated) SQLite store: statuses only rise, a report repeated is
kept once, a report before its attempt's event or naming no message is kept, never dropped."""

from __future__ import annotations

import time

import pytest

from shared.model import AttemptRecord, DeliveryReport, Job, Outcome, ReportState, Status
from shared.settings import StoreSettings
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.messages import get_message, insert_submitted, row_for_job
from shared.store.recording import fold, promoted
from shared.store.report_rows import unmatched_count


@pytest.fixture
async def sessions(store_url):
    engine = make_engine(StoreSettings(url=store_url))
    yield make_sessionmaker(engine)
    await engine.dispose()


def job(message_id: str = "a" * 32) -> Job:
    now = time.time()
    return Job(id=message_id, tenant="t", to="+31612345678", sender="S", body="b", expires_at=now + 60)


def report(
    state: ReportState, *, message_id: str = "a" * 32, attempt: int = 1, raw: str = ""
) -> DeliveryReport:
    return DeliveryReport(
        site="a",
        platform="kannel",
        message_id=message_id,
        attempt=attempt,
        state=state,
        platform_status=state.value.upper(),
        raw=raw or f"{message_id}/{attempt}/{state.value}",
    )


def sent(message_id: str = "a" * 32, attempt: int = 1) -> AttemptRecord:
    return AttemptRecord(
        message_id=message_id, site="a", attempt=attempt, outcome=Outcome.ACCEPTED, status=Status.SENT
    )


def test_reported_statuses_outrank_sent_and_delivered_outranks_undelivered() -> None:
    assert promoted("sent", Status.DELIVERED) and promoted("sent", Status.UNDELIVERED)
    assert promoted("undelivered", Status.DELIVERED)
    assert not promoted("delivered", Status.SENT) and not promoted("undelivered", Status.SENT)
    assert not promoted("delivered", Status.UNDELIVERED)
    assert promoted("dead", Status.DELIVERED)  # an ambiguous copy that reached the handset after all


async def test_a_late_sent_does_not_overwrite_delivered(sessions) -> None:
    async with sessions.begin() as session:
        await insert_submitted(session, [row_for_job(job(), site="a")])
    async with sessions.begin() as session:
        first = await fold(session, events=[], dead=[], reports=[report(ReportState.DELIVERED)])
    async with sessions.begin() as session:
        await fold(session, events=[sent()], dead=[])
    async with sessions() as session:
        view = await get_message(session, message_id="a" * 32, tenant="t")
    assert first.reports_added == 1 and first.reports_unmatched == 0
    assert view is not None and view.status == "delivered"
    assert [(r.site, r.attempt, r.state) for r in view.reports] == [("a", 1, "delivered")]


async def test_a_report_repeated_is_kept_once_and_counted(sessions) -> None:
    async with sessions.begin() as session:
        await insert_submitted(session, [row_for_job(job(), site="a")])
        await fold(session, events=[sent()], dead=[])
    again = report(ReportState.UNDELIVERED)
    async with sessions.begin() as session:
        first = await fold(session, events=[], dead=[], reports=[again, again])
    async with sessions.begin() as session:
        second = await fold(session, events=[], dead=[], reports=[again])
    async with sessions() as session:
        view = await get_message(session, message_id="a" * 32, tenant="t")
    assert (first.reports_added, first.reports_seen_before) == (1, 1)
    assert (second.reports_added, second.reports_seen_before) == (0, 1)
    assert view is not None and view.status == "undelivered" and len(view.reports) == 1


async def test_a_report_before_its_message_is_matched_by_id_and_attempt(sessions) -> None:
    early = report(ReportState.DELIVERED, attempt=2)
    async with sessions.begin() as session:
        result = await fold(session, events=[], dead=[], reports=[early])
    async with sessions.begin() as session:
        await fold(session, events=[sent(attempt=2)], dead=[])
        await insert_submitted(session, [row_for_job(job(), site="a")])
    async with sessions() as session:
        view = await get_message(session, message_id="a" * 32, tenant="t")
        unmatched = await unmatched_count(session)
    assert result.reports_unmatched == 1 and unmatched == 1  # counted when it came
    assert view is not None and view.status == "delivered"
    assert [(r.attempt, r.state) for r in view.reports] == [(2, "delivered")]


async def test_a_report_naming_no_message_is_kept_unmatched(sessions) -> None:
    orphan = report(ReportState.DELIVERED, message_id="", raw="id:0000beef stat:DELIVRD")
    async with sessions.begin() as session:
        result = await fold(session, events=[], dead=[], reports=[orphan])
    async with sessions() as session:
        assert await unmatched_count(session) == 1
    assert (result.reports_added, result.reports_unmatched) == (1, 1)


async def test_a_pending_report_is_kept_and_moves_nothing(sessions) -> None:
    async with sessions.begin() as session:
        await insert_submitted(session, [row_for_job(job(), site="a")])
        await fold(session, events=[sent()], dead=[], reports=[report(ReportState.PENDING)])
    async with sessions() as session:
        view = await get_message(session, message_id="a" * 32, tenant="t")
    assert view is not None and view.status == "sent" and [r.state for r in view.reports] == ["pending"]
