"""The HTTP API in process (httpx + ASGITransport) against the real RabbitMQ and a real SQLite store."""

from __future__ import annotations

import asyncio

import pytest

from shared.store.api_keys import create_key, revoke_key
from shared.topology import site_queue
from tests.ingress_helpers import api_for, queued_jobs, sms

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"


@pytest.fixture
async def api(broker_cleanup, settings_factory, store_url):
    settings = settings_factory(routing={"policy": "primary", "primary": "a"})
    async with api_for(settings) as api:
        yield api


async def depth(api, site: str = "a") -> int:
    return await queued_jobs(api.settings.broker.url, site_queue(api.settings.broker.prefix, site))


async def test_submit_answers_202_with_location_and_status_is_accepted(api):
    response = await api.submit(sms(reference="order-1"))
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "accepted" and len(body["id"]) == 32
    assert response.headers["location"] == f"/v1/messages/{body['id']}"
    status = await api.client.get(response.headers["location"], headers=api.auth())
    assert status.status_code == 200
    view = status.json()
    assert view["status"] == "accepted"
    assert view["to"] == "+31612345678" and view["from"] == "MyBank" and view["reference"] == "order-1"
    assert view["site"] == "a" and view["history"] == []
    assert await depth(api) == 1


async def test_national_number_becomes_e164_with_default_region(api):
    response = await api.submit(sms(to="06 12345678"))
    assert response.status_code == 202
    view = (await api.client.get(response.headers["location"], headers=api.auth())).json()
    assert view["to"] == "+31612345678"


async def test_invalid_fields_are_each_named_in_a_problem_and_nothing_is_published(api):
    response = await api.submit(
        {"to": "+3161", "from": "A-very-long-sender", "body": "", "validity_s": 0, "colour": "red"}
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["status"] == 422 and problem["title"] and problem["type"] and problem["detail"]
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {"to", "from", "body", "validity_s", "colour"}
    assert await depth(api) == 0


async def test_too_many_segments_is_refused(api):
    limit = api.settings.ingress.max_segments
    response = await api.submit(sms(body="x" * (153 * limit + 1)))
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body"]
    assert (await api.submit(sms(body="x" * (153 * limit)))).status_code == 202


async def test_malformed_json_is_a_400_problem(api):
    response = await api.client.post(
        "/v1/messages",
        content=b'{"to": "+31612345678",',
        headers={**api.auth(), "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["errors"]
    assert await depth(api) == 0


@pytest.mark.parametrize("header", [None, "Bearer rk_unknown", "Basic abc", "Bearer "])
async def test_missing_or_unknown_key_is_401(api, header):
    headers = {"Authorization": header} if header else {}
    response = await api.client.post("/v1/messages", json=sms(), headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert await depth(api) == 0


async def test_revoked_key_is_401(api):
    key, info = await create_key(api.ingress.sessions, tenant="bank-c")
    await revoke_key(api.ingress.sessions, info.prefix)
    response = await api.client.post("/v1/messages", json=sms(), headers=api.auth(key))
    assert response.status_code == 401
    assert await depth(api) == 0


async def test_body_over_the_size_limit_is_413(api):
    limit = api.settings.ingress.max_request_bytes
    response = await api.submit(sms(body="x" * (limit + 10)))
    assert response.status_code == 413
    assert response.headers["content-type"].startswith(PROBLEM)
    assert await depth(api) == 0


async def test_batch_accepts_valid_items_and_rejects_invalid_ones(api):
    items = [sms(), sms(to="not a number"), sms(body="second"), {"to": "+31612345678"}, sms(body="third")]
    response = await api.client.post("/v1/messages/batch", json={"messages": items}, headers=api.auth())
    assert response.status_code == 202
    body = response.json()
    assert body["accepted"] == 3 and body["rejected"] == 2
    by_index = {r["index"]: r for r in body["results"]}
    assert [by_index[i]["status"] for i in range(5)] == [
        "accepted",
        "rejected",
        "accepted",
        "rejected",
        "accepted",
    ]
    assert by_index[1]["errors"] == [
        {"field": "messages[1].to", "message": by_index[1]["errors"][0]["message"]}
    ]
    assert {e["field"] for e in by_index[3]["errors"]} == {"messages[3].from", "messages[3].body"}
    assert len({by_index[i]["id"] for i in (0, 2, 4)}) == 3
    assert await depth(api) == 3


async def test_batch_with_nothing_valid_or_too_many_items_is_refused(api):
    none_valid = await api.client.post(
        "/v1/messages/batch", json={"messages": [{"to": "x"}]}, headers=api.auth()
    )
    assert none_valid.status_code == 422
    too_many = [sms()] * (api.settings.ingress.max_batch + 1)
    response = await api.client.post("/v1/messages/batch", json={"messages": too_many}, headers=api.auth())
    assert response.status_code in (413, 422)
    assert await depth(api) == 0


async def test_idempotency_key_replays_the_first_answer_and_conflicts_on_another_body(api):
    first = await api.submit(sms(), **{"Idempotency-Key": "k-1"})
    again = await api.submit(sms(), **{"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    other = await api.submit(sms(body="something else"), **{"Idempotency-Key": "k-1"})
    assert other.status_code == 409
    assert other.headers["content-type"].startswith(PROBLEM)
    # The same key of another tenant is another key.
    theirs = await api.client.post(
        "/v1/messages", json=sms(), headers={**api.auth(api.other_key), "Idempotency-Key": "k-1"}
    )
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
    assert await depth(api) == 2


async def test_concurrent_duplicates_publish_once(api):
    responses = await asyncio.gather(*(api.submit(sms(), **{"Idempotency-Key": "same"}) for _ in range(20)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["id"] for r in responses}) == 1
    assert await depth(api) == 1


async def test_a_refused_request_does_not_use_up_its_idempotency_key(api):
    bad = await api.submit(sms(to="nope"), **{"Idempotency-Key": "k-2"})
    assert bad.status_code == 422
    good = await api.submit(sms(), **{"Idempotency-Key": "k-2"})
    assert good.status_code == 202


async def test_other_tenants_cannot_see_a_message(api):
    message_id = (await api.submit(sms())).json()["id"]
    assert (
        await api.client.get(f"/v1/messages/{message_id}", headers=api.auth(api.other_key))
    ).status_code == 404
    assert (await api.client.get(f"/v1/messages/{message_id}", headers=api.auth())).status_code == 200
    assert (await api.client.get("/v1/messages/nosuchid", headers=api.auth())).status_code == 404


async def test_health_readiness_metrics_and_openapi(api):
    assert (await api.client.get("/healthz")).status_code == 200
    ready = await api.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "broker": "ok", "store": "ok", "spool_backlog": 0}
    await api.submit(sms())
    metrics = (await api.client.get("/metrics")).text
    assert 'relay_ingress_submits_total{result="queued"}' in metrics
    assert "relay_ingress_publish_seconds_bucket" in metrics and "relay_ingress_spool_backlog" in metrics
    document = (await api.client.get("/openapi.json")).json()
    request = document["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]
    assert request["schema"]["$ref"] == "#/components/schemas/SubmitRequest"
    assert "SubmitRequest" in document["components"]["schemas"]
    assert (await api.client.get("/docs")).status_code == 200


async def test_store_down_at_submit_still_accepts_and_writes_the_row_later(api, monkeypatch):
    """The broker's durability is the promise; the messages row follows once the store is back."""
    from sqlalchemy.exc import OperationalError

    from ingress import store_writer

    monkeypatch.setattr(store_writer, "RETRY_INTERVAL_S", 0.1)
    writer = api.ingress.store_writer
    real_write = writer._write_sync

    def store_down(rows):
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    writer._write_sync = store_down
    try:
        response = await api.submit(sms())
        assert response.status_code == 202
        assert await depth(api) == 1
        assert writer.retry_backlog == 1
        status = await api.client.get(response.headers["location"], headers=api.auth())
        assert status.status_code == 404  # not in the store yet
    finally:
        writer._write_sync = real_write
    for _ in range(100):
        if writer.retry_backlog == 0:
            break
        await asyncio.sleep(0.05)
    status = await api.client.get(response.headers["location"], headers=api.auth())
    assert status.status_code == 200 and status.json()["status"] == "accepted"


async def test_the_framework_routes_answer_like_the_fast_path(api):
    """The bare FastAPI app (behind the fast path in production) serves the same submit logic."""
    import httpx

    from ingress.app import create_app

    bare = create_app(api.settings, ingress=api.ingress).api
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url="http://relay") as client:
        accepted = await client.post("/v1/messages", json=sms(), headers=api.auth())
        assert accepted.status_code == 202 and accepted.headers["location"].endswith(accepted.json()["id"])
        refused = await client.post("/v1/messages/batch", json={"messages": []}, headers=api.auth())
        assert refused.status_code == 422 and refused.headers["content-type"].startswith(PROBLEM)
        assert (await client.post("/v1/messages", json=sms())).status_code == 401
    assert await depth(api) == 1
