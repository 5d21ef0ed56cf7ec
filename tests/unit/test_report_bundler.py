"""The report bundler: concurrent reports share one publish, each waits for its message's verdict, and a
report whose request stopped waiting before its message left is left out."""

from __future__ import annotations

import asyncio

from ingress.report_bundler import NO_CONFIRM, ReportBundler
from shared.broker import CONFIRMED, Fate, Verdict
from shared.envelope import decode_reports
from shared.model import DeliveryReport, ReportState


def _report(n: int) -> DeliveryReport:
    return DeliveryReport(
        site="a", platform="http-json", message_id=f"{n:032x}", attempt=1, state=ReportState.DELIVERED
    )


async def test_concurrent_reports_share_a_message_and_each_gets_its_verdict() -> None:
    published: list[list[str]] = []
    release = asyncio.Event()

    async def publish(body: bytes) -> Verdict:
        published.append([r.message_id for r in decode_reports(body)])
        await release.wait()
        return CONFIRMED

    bundler = ReportBundler(publish=publish, bundle_max=3, in_flight_max=8)
    verdicts = [bundler.add(_report(n)) for n in range(5)]
    verdicts[1].cancel()  # its request stopped waiting before the message left
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert published == [[f"{n:032x}" for n in (0, 2, 3)], [f"{4:032x}"]]
    assert not any(v.done() for n, v in enumerate(verdicts) if n != 1)  # none answered before the confirm
    release.set()
    results = await asyncio.gather(*(v for n, v in enumerate(verdicts) if n != 1))
    assert all(r.confirmed for r in results)


async def test_a_failed_publish_answers_every_report_of_its_message_unknown() -> None:
    async def publish(body: bytes) -> Verdict:
        raise ConnectionError("gone")

    bundler = ReportBundler(publish=publish, bundle_max=50, in_flight_max=8)
    results = await asyncio.gather(bundler.add(_report(1)), bundler.add(_report(2)))
    assert [r.fate for r in results] == [Fate.UNKNOWN, Fate.UNKNOWN]
    assert not any(r.confirmed for r in results)


async def test_a_verdict_not_given_in_time_is_no_confirm_and_its_report_stays_out() -> None:
    published: list[list[str]] = []
    release = asyncio.Event()

    async def publish(body: bytes) -> Verdict:
        published.append([r.message_id for r in decode_reports(body)])
        await release.wait()
        return CONFIRMED

    bundler = ReportBundler(publish=publish, bundle_max=50, in_flight_max=1)
    sent = bundler.add(_report(1), wait_s=0.01)
    await asyncio.sleep(0)
    waiting = bundler.add(_report(2), wait_s=0.01)  # held back: one message in flight at most
    assert (await sent).fate is Fate.UNKNOWN and (await waiting).fate is Fate.UNKNOWN
    release.set()
    await asyncio.sleep(0.01)
    assert published == [[f"{1:032x}"]]  # the report whose request gave up before it left stayed out
    assert sent.result() is NO_CONFIRM
