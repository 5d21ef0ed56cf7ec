"""The recorder folds worker events and dead letters (published as the workers do) into the store,
and GET /v1/messages/{id} shows them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from ingress.metrics import RECORDER_MALFORMED, RECORDER_REFUSED
from ingress.public_texts import REFUSED
from shared.broker import ConfirmedPublisher, connect
from shared.envelope import encode_dead, encode_events
from shared.model import AttemptRecord, DeadReason, Job, Outcome, Status
from shared.store.models import Attempt, DeadLetter
from shared.topology import dead_exchange, dead_queue, events_exchange, events_queue
from tests.ingress_helpers import api_for, queue_depth, sms

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(broker_cleanup, settings_factory, store_url):
    async with api_for(settings_factory(routing={"policy": "primary", "primary": "a"})) as api:
        yield api


@pytest.fixture
async def publisher(api):
    connection = await connect(api.settings.broker)
    async with connection:
        yield await ConfirmedPublisher.open(connection, confirm_timeout_s=5)


async def eventually(fetch, check, timeout_s: float = 10.0):
    deadline = time.monotonic() + timeout_s
    while True:
        value = await fetch()
        if check(value) or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


async def status_of(api, message_id: str, key: str | None = None) -> dict:
    response = await api.client.get(f"/v1/messages/{message_id}", headers=api.auth(key))
    return response.json() if response.status_code == 200 else {"http": response.status_code}


async def publish_events(api, publisher, records: list[AttemptRecord]) -> None:
    await publisher.publish(
        encode_events(records), exchange=events_exchange(api.settings.broker.prefix), routing_key=""
    )


async def test_attempts_and_final_status_show_in_the_status_api(api, publisher):
    message_id = (await api.submit(sms())).json()["id"]
    t0 = time.time()
    attempt = AttemptRecord(message_id=message_id, site="a", attempt=1, outcome=Outcome.UNAVAILABLE, at=t0)
    records = [
        replace(attempt, detail="connection refused", latency_ms=2.5, status=Status.RETRYING, worker="h:1"),
        replace(
            attempt, attempt=2, outcome=Outcome.AMBIGUOUS, detail="timeout", at=t0 + 1, status=Status.RETRYING
        ),
        replace(
            attempt,
            site="b",
            attempt=3,
            outcome=Outcome.ACCEPTED,
            detail="Accepted",
            at=t0 + 2,
            status=Status.SENT,
        ),
    ]
    await publish_events(api, publisher, records[:2])
    await publish_events(api, publisher, records[2:])
    # A late report of an earlier retry changes nothing: delivered stays delivered.
    late = replace(attempt, attempt=2, outcome=Outcome.UNAVAILABLE, at=t0 + 1.5, status=Status.RETRYING)
    await publish_events(api, publisher, [late])
    # A redelivered batch is not counted twice.
    await publish_events(api, publisher, records[2:])

    view = await eventually(lambda: status_of(api, message_id), lambda v: len(v.get("history", [])) >= 4)
    assert view["status"] == "sent"
    assert view["attempts"] == 3 and view["possible_duplicates"] == 1
    history = [(h["site"], h["attempt"], h["outcome"], h["possible_duplicate"]) for h in view["history"]]
    assert history == [
        ("a", 1, "unavailable", False),
        ("a", 2, "ambiguous", True),
        ("a", 2, "unavailable", False),
        ("b", 3, "accepted", False),
    ]
    # Tenants see a fixed text per kind of failure, not the platform's own answer.
    assert view["history"][0]["detail"] == REFUSED and view["history"][0]["latency_ms"] == 2.5
    assert (await status_of(api, message_id, api.other_key)) == {"http": 404}


async def test_dead_letters_are_stored_once_and_set_the_status(api, publisher):
    prefix = api.settings.broker.prefix
    message_id = (await api.submit(sms())).json()["id"]
    async with api.ingress.sessions() as session:
        stored = await session.get(
            __import__("shared.store.models", fromlist=["Message"]).Message, message_id
        )
        job = Job(
            id=message_id,
            tenant="bank-a",
            to=stored.to_number,
            sender=stored.sender,
            body=stored.body,
            accepted_at=stored.accepted_at.timestamp(),
            expires_at=stored.expires_at.timestamp(),
        )
    dead = encode_dead(job, site="b", reason=DeadReason.REJECTED, detail="invalid destination", attempts=1)
    for _ in range(2):  # a redelivery must not make a second dead letter
        await publisher.publish(dead, exchange=dead_exchange(prefix), routing_key="")
    await publish_events(
        api,
        publisher,
        [
            AttemptRecord(
                message_id=message_id,
                site="b",
                attempt=1,
                outcome=Outcome.REJECTED,
                detail="invalid destination",
                status=Status.REJECTED,
            )
        ],
    )
    view = await eventually(
        lambda: status_of(api, message_id), lambda v: v.get("status") == "rejected" and v["history"]
    )
    assert view["status"] == "rejected" and view["history"][0]["outcome"] == "rejected"

    # A dead letter of a message the store never saw creates its row from the job.
    unknown = Job(
        id="f" * 32, tenant="bank-a", to="+31611111111", sender="Bank", body="x", expires_at=time.time() + 60
    )
    await publisher.publish(
        encode_dead(unknown, site="a", reason=DeadReason.ATTEMPTS_EXHAUSTED, detail="503", attempts=12),
        exchange=dead_exchange(prefix),
        routing_key="",
    )
    created = await eventually(lambda: status_of(api, unknown.id), lambda v: v.get("status") == "dead")
    assert created["status"] == "dead" and created["to"] == "+31611111111" and created["attempts"] == 12

    async with api.ingress.sessions() as session:
        letters = (await session.scalars(select(DeadLetter).order_by(DeadLetter.message_id))).all()
        assert [(d.message_id, d.reason, d.site) for d in letters] == [
            (message_id, "rejected", "b"),
            (unknown.id, "attempts-exhausted", "a"),
        ]
        assert letters[0].job["id"] == message_id and letters[0].job["to"] == job.to
        assert await session.scalar(select(func.count()).select_from(Attempt)) == 1


async def test_malformed_reports_are_logged_counted_and_acked(api, publisher):
    prefix = api.settings.broker.prefix
    before = RECORDER_MALFORMED._value.get()
    for body in (b"not json", b'{"v": 99, "events": []}', b'{"v": 1, "events": [{"message_id": "x"}]}'):
        await publisher.publish(body, exchange=events_exchange(prefix), routing_key="")
    await publisher.publish(b'{"v": 1, "dead": {"job": {}}}', exchange=dead_exchange(prefix), routing_key="")
    # The recorder goes on with good reports after the bad ones.
    message_id = (await api.submit(sms())).json()["id"]
    await publish_events(
        api,
        publisher,
        [
            AttemptRecord(
                message_id=message_id, site="a", attempt=1, outcome=Outcome.ACCEPTED, status=Status.SENT
            )
        ],
    )
    view = await eventually(lambda: status_of(api, message_id), lambda v: v.get("status") == "sent")
    assert view["status"] == "sent"
    assert RECORDER_MALFORMED._value.get() - before == 4
    assert await queue_depth(api.settings.broker.url, events_queue(prefix)) == 0


async def test_a_batch_the_store_refuses_is_requeued_and_applied_later(api, publisher, monkeypatch):
    from ingress import recorder

    real_fold = recorder.fold
    refusals = {"left": 2}

    async def flaky_fold(session, **reports):
        if refusals["left"]:
            refusals["left"] -= 1
            raise OSError("disk I/O error")
        return await real_fold(session, **reports)

    monkeypatch.setattr(recorder, "fold", flaky_fold)
    monkeypatch.setattr(recorder, "STORE_RETRY_PAUSE_S", 0.1)
    message_id = (await api.submit(sms())).json()["id"]
    await publish_events(
        api,
        publisher,
        [
            AttemptRecord(
                message_id=message_id, site="a", attempt=1, outcome=Outcome.ACCEPTED, status=Status.SENT
            )
        ],
    )
    view = await eventually(lambda: status_of(api, message_id), lambda v: v.get("status") == "sent")
    assert refusals["left"] == 0, "the store refused twice before the batch went through"
    assert view["status"] == "sent" and len(view["history"]) == 1


async def test_a_report_the_store_refuses_is_stored_cut_to_fit_and_the_rest_as_sent(api, publisher):
    """SQLite refuses an integer beyond 63 bits and a sign: the report carrying one is found among the
    batch, stored with it cut to fit, and nothing is dropped; a report no worker could have written is."""
    prefix = api.settings.broker.prefix
    refused_before = RECORDER_REFUSED.labels("events", "fitted")._value.get()
    dead_before = RECORDER_REFUSED.labels("dead", "fitted")._value.get()
    malformed_before = RECORDER_MALFORMED._value.get()
    ids = [(await api.submit(sms(body=f"m{n}"))).json()["id"] for n in range(3)]
    good = AttemptRecord(message_id=ids[0], site="a", attempt=1, outcome=Outcome.ACCEPTED, status=Status.SENT)
    huge = replace(good, message_id=ids[1], attempt=2**63, outcome=Outcome.AMBIGUOUS, status=Status.RETRYING)
    job = Job(
        id=ids[2], tenant="bank-a", to="+31612345678", sender="MyBank", body="m2", expires_at=time.time() + 60
    )
    dead = encode_dead(job, site="a", reason=DeadReason.ATTEMPTS_EXHAUSTED, detail="503", attempts=2**63)
    await publisher.publish(dead, exchange=dead_exchange(prefix), routing_key="")
    await publish_events(api, publisher, [huge, good])
    await publish_events(api, publisher, [replace(good, message_id="x" * 40)])  # no id of the relay's

    views = [
        await eventually(lambda m=m: status_of(api, m), lambda v, s=s: v.get("status") == s)
        for m, s in zip(ids, ("sent", "retrying", "dead"), strict=True)
    ]
    assert [v["status"] for v in views] == ["sent", "retrying", "dead"]
    assert views[1]["history"][0]["attempt"] == 2**31 - 1 and views[1]["possible_duplicates"] == 1
    assert views[2]["attempts"] == 2**31 - 1
    async with api.ingress.sessions() as session:
        letter = await session.get(DeadLetter, ids[2])
    assert letter is not None and letter.job["id"] == ids[2]
    assert RECORDER_REFUSED.labels("events", "fitted")._value.get() - refused_before == 1
    assert RECORDER_REFUSED.labels("dead", "fitted")._value.get() - dead_before == 1
    await eventually(
        lambda: asyncio.sleep(0, RECORDER_MALFORMED._value.get()), lambda n: n > malformed_before
    )
    assert RECORDER_MALFORMED._value.get() - malformed_before == 1
    for queue in (events_queue(prefix), dead_queue(prefix)):
        assert await queue_depth(api.settings.broker.url, queue) == 0
