"""The drop-in APIs (CM, Kannel, Twilio) in process (httpx + ASGITransport, through the submit fast path)
against the real RabbitMQ and a real SQLite store: formats, codes, and the native API's guarantees."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from shared.store.accounts import ensure_account_sid
from shared.topology import site_queue
from tests.helpers import SITES
from tests.ingress_helpers import Api, api_for, queued_jobs

pytestmark = pytest.mark.integration

NUMBER = "+31612345678"


@pytest.fixture
async def api(broker_cleanup, settings_factory, store_url):
    settings = settings_factory(routing={"policy": "primary", "primary": "a"})
    async with api_for(settings) as api:
        yield api


async def depth(api: Api) -> int:
    return await queued_jobs(api.settings.broker.url, site_queue(api.settings.broker.prefix, "a"))


async def native(api: Api, message_id: str, key: str | None = None) -> httpx.Response:
    return await api.client.get(f"/v1/messages/{message_id}", headers=api.auth(key))


def cm_body(key: str, *msgs: dict[str, Any]) -> dict[str, Any]:
    return {"messages": {"authentication": {"producttoken": key}, "msg": list(msgs)}}


def cm_msg(*numbers: str, **fields: Any) -> dict[str, Any]:
    return {
        "allowedChannels": ["SMS"],
        "from": "MyBank",
        "to": [{"number": n} for n in numbers or ("0031612345678",)],
        "body": {"type": "AUTO", "content": "Your code is 123456"},
        "customGrouping3": "text-sdk-python-2.0.4",
        **fields,
    }


async def test_cm_takes_each_recipient_and_the_native_api_finds_them(api):
    answer = await api.client.post(
        "/v1.0/message",
        json=cm_body(api.key, cm_msg("0031612345678", "+31612345679", reference="r-1"), cm_msg("0612345670")),
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["errorCode"] == 0 and body["details"] == "Created 3 message(s)"
    assert [m["to"] for m in body["messages"]] == ["0031612345678", "+31612345679", "0612345670"]
    assert {m["status"] for m in body["messages"]} == {"Accepted"}
    assert [m["reference"] for m in body["messages"]] == ["r-1", "r-1", None]
    view = (await native(api, body["messages"][0]["id"])).json()
    assert view["to"] == NUMBER and view["from"] == "MyBank" and view["reference"] == "r-1"
    assert (await native(api, body["messages"][0]["id"], api.other_key)).status_code == 404
    assert await depth(api) == 3


async def test_cm_lists_rejected_messages_with_cm_codes_and_takes_the_rest(api):
    answer = await api.client.post(
        "/v1.0/message",
        json=cm_body(
            api.key,
            cm_msg("0031612345678", "00316abc"),
            cm_msg(body={"type": "AUTO", "content": ""}),
            cm_msg(allowedChannels=["WhatsApp"]),
            cm_msg(richContent={"conversation": []}),
        ),
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["errorCode"] == 201 and body["details"] == "Created 1 message(s)"
    codes = [(m["status"], m["messageErrorCode"]) for m in body["messages"]]
    assert codes == [
        ("Accepted", 0),
        ("Rejected", 303),
        ("Rejected", 304),
        ("Rejected", 305),
        ("Rejected", 305),
    ]
    assert body["messages"][1]["messageDetails"] == "Gsm '00316abc' is not a number."
    assert "richContent" in body["messages"][4]["messageDetails"]
    assert await depth(api) == 1

    none = await api.client.post("/v1.0/message", json=cm_body(api.key, cm_msg("12")))
    assert none.status_code == 400 and none.json()["errorCode"] == 201
    assert none.json()["details"] == "Created 0 message(s)"
    assert await depth(api) == 1


async def test_cm_refuses_a_bad_token_an_empty_request_and_bad_json(api):
    bad = await api.client.post("/v1.0/message", json=cm_body("rk_nosuchkey", cm_msg()))
    assert bad.status_code == 400
    assert bad.json() == {
        "details": "No account found for the given authentication",
        "errorCode": 101,
        "messages": [],
    }
    empty = await api.client.post("/v1.0/message", json=cm_body(api.key))
    assert empty.status_code == 400 and empty.json()["errorCode"] == 203
    garbage = await api.client.post("/v1.0/message", content=b"{not json")
    assert garbage.status_code == 400 and garbage.json()["errorCode"] == 202
    header = await api.client.post(
        "/v1.0/message", json=cm_body("", cm_msg()), headers={"X-CM-PRODUCTTOKEN": api.key}
    )
    assert header.status_code == 200 and header.json()["errorCode"] == 0
    assert await depth(api) == 1


async def test_cm_validity_and_parts_are_honoured(api):
    answer = await api.client.post(
        "/v1.0/message",
        json=cm_body(
            api.key,
            cm_msg(validity="2h"),
            cm_msg(body={"type": "AUTO", "content": "x" * 200}, maximumNumberOfMessageParts=1),
            cm_msg(validity="next week"),
        ),
    )
    results = answer.json()["messages"]
    assert [r["messageErrorCode"] for r in results] == [0, 304, 305]
    view = (await native(api, results[0]["id"])).json()
    valid_for = datetime.fromisoformat(view["expires_at"]) - datetime.fromisoformat(view["accepted_at"])
    assert abs(valid_for - timedelta(hours=2)) < timedelta(seconds=2)


async def test_cm_idempotency_key_replays_the_first_answer(api):
    request = cm_body(api.key, cm_msg())
    first = await api.client.post("/v1.0/message", json=request, headers={"Idempotency-Key": "k-1"})
    again = await api.client.post("/v1.0/message", json=request, headers={"Idempotency-Key": "k-1"})
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    other = cm_body(api.key, cm_msg(reference="changed"))
    conflict = await api.client.post("/v1.0/message", json=other, headers={"Idempotency-Key": "k-1"})
    assert conflict.status_code == 409
    assert await depth(api) == 1


def kannel_params(api: Api, **fields: str) -> dict[str, str]:
    return {"username": "bank-a", "password": api.key, "from": "MyBank", "to": NUMBER, "text": "hi", **fields}


async def sendsms(api: Api, **fields: str) -> httpx.Response:
    return await api.client.get("/cgi-bin/sendsms", params=kannel_params(api, **fields))


async def test_kannel_get_answers_kannels_exact_text_and_takes_each_number(api):
    answer = await sendsms(api, to=f"{NUMBER} 0031612345679 {NUMBER}", text="Your code is 1")
    assert answer.status_code == 202 and answer.content == b"0: Accepted for delivery"
    ids = answer.headers["x-relay-message-ids"].split(",")
    assert len(ids) == 2  # a number twice is one message, as in Kannel
    view = (await native(api, ids[1])).json()
    assert view["to"] == "+31612345679" and view["from"] == "MyBank" and view["status"] == "accepted"
    assert await depth(api) == 2


@pytest.mark.parametrize(
    ("fields", "status", "text"),
    [
        ({"password": "rk_wrong"}, 403, "Authorization failed for sendsms"),
        ({"username": "bank-b"}, 403, "Authorization failed for sendsms"),
        ({"to": ""}, 400, "Empty receiver number not allowed, rejected"),
        ({"from": ""}, 400, "Sender missing and no global set, rejected"),
        ({"to": f"{NUMBER} 123abc"}, 400, "Number(s) has/have been denied by white- and/or black-lists."),
        ({"coding": "5"}, 400, "Coding field misformed, rejected"),
        ({"charset": "nosuch"}, 400, "Charset or body misformed, rejected"),
        ({"udh": "\x05\x00\x03\x01\x02\x01"}, 400, "UDH not supported by this relay, rejected"),
        ({"coding": "1"}, 400, "8-bit data (coding=1) not supported by this relay, rejected"),
        ({"dlr-mask": "31", "dlr-url": "http://client/dlr"}, 400, "DLR-URL (delivery reports) not supported"),
        ({"mclass": "1"}, 400, "MClass field not supported by this relay, rejected"),
        ({"text": ""}, 400, "Empty text not allowed, rejected."),
    ],
)
async def test_kannel_refusals_are_kannels_texts(api, fields, status, text):
    answer = await sendsms(api, **fields)
    assert answer.status_code == status and answer.text.startswith(text)
    assert await depth(api) == 0


async def test_kannel_missing_receiver_and_an_empty_dlr_url(api):
    params = kannel_params(api)
    del params["to"]
    missing = await api.client.get("/cgi-bin/sendsms", params=params)
    assert (missing.status_code, missing.text) == (400, "Missing receiver number, rejected")
    plain = await sendsms(api, **{"dlr-url": "", "dlr-mask": "0", "coding": "0", "charset": "UTF-8"})
    assert plain.status_code == 202


async def test_kannel_charsets_codings_validity_and_posts(api):
    raw = "username=bank-a&password={key}&from=Shop&to=%2B31612345678&text={text}{extra}"

    async def get(text: str, extra: str = "") -> dict[str, Any]:
        answer = await api.client.get(f"/cgi-bin/sendsms?{raw.format(key=api.key, text=text, extra=extra)}")
        assert answer.status_code == 202, answer.text
        return (await native(api, answer.headers["x-relay-message-ids"])).json()

    assert (await get("caf%E9"))["encoding"] == "gsm7"  # WINDOWS-1252 by default: é is in GSM-7
    assert (await get("%D0%BF%D1%80%D0%B8", "&charset=UTF-8"))["encoding"] == "ucs2"
    assert (await get("%04%3F%04%40", "&coding=2"))["encoding"] == "ucs2"
    view = await get("soon", "&validity=5")
    valid_for = datetime.fromisoformat(view["expires_at"]) - datetime.fromisoformat(view["accepted_at"])
    assert abs(valid_for - timedelta(minutes=5)) < timedelta(seconds=2)

    form = await api.client.post("/cgi-bin/sendsms", data=kannel_params(api, text="posted"))
    assert (form.status_code, form.text) == (202, "0: Accepted for delivery")
    headers = {"X-Kannel-Username": "bank-a", "X-Kannel-Password": api.key, "X-Kannel-To": NUMBER}
    kannel_post = await api.client.post(
        "/cgi-bin/sendsms",
        content="caf\u00e9".encode(),
        headers={**headers, "X-Kannel-From": "Shop", "Content-Type": "text/plain; charset=utf-8"},
    )
    assert (kannel_post.status_code, kannel_post.text) == (202, "0: Accepted for delivery")
    odd = await api.client.post(
        "/cgi-bin/sendsms", content=b"{}", headers={"Content-Type": "application/json"}
    )
    assert (odd.status_code, odd.text) == (400, "Invalid content-type")
    assert await depth(api) == 6


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def test_twilio_create_fetch_and_the_native_api(api):
    sid = await ensure_account_sid(api.ingress.sessions, tenant="bank-a")
    url = f"/2010-04-01/Accounts/{sid}/Messages.json"
    created = await api.client.post(
        url,
        data={"To": NUMBER, "From": "MyBank", "Body": "Hello", "ValidityPeriod": "600"},
        headers=basic(sid, api.key),
    )
    assert created.status_code == 201
    message = created.json()
    assert message["status"] == "queued" and message["account_sid"] == sid and message["num_segments"] == "1"
    assert message["to"] == NUMBER and message["from"] == "MyBank" and message["body"] == "Hello"
    assert message["sid"].startswith("SM") and len(message["sid"]) == 34
    fetched = await api.client.get(message["uri"], headers=basic(sid, api.key))
    assert fetched.status_code == 200
    assert fetched.json()["status"] == "queued" and fetched.json()["body"] == "Hello"
    assert (await native(api, message["sid"][2:])).json()["to"] == NUMBER
    assert await depth(api) == 1

    other_sid = await ensure_account_sid(api.ingress.sessions, tenant="bank-b")
    other = await api.client.get(
        message["uri"].replace(sid, other_sid), headers=basic(other_sid, api.other_key)
    )
    assert other.status_code == 404 and other.json()["code"] == 20404


@pytest.mark.parametrize(
    ("form", "status", "code"),
    [
        ({"To": "+3161"}, 400, 21211),
        ({"From": "A very long sender id"}, 400, 21212),
        ({"Body": ""}, 400, 21602),
        ({"To": ""}, 400, 21604),
        ({"ValidityPeriod": "36001"}, 400, 21624),
        ({"MediaUrl": "https://example.invalid/cat.png"}, 400, 20001),
        ({"StatusCallback": "https://example.invalid/status"}, 400, 20001),
    ],
)
async def test_twilio_errors_are_twilio_error_objects(api, form, status, code):
    sid = await ensure_account_sid(api.ingress.sessions, tenant="bank-a")
    answer = await api.client.post(
        f"/2010-04-01/Accounts/{sid}/Messages.json",
        data={"To": NUMBER, "From": "MyBank", "Body": "Hello", **form},
        headers=basic(sid, api.key),
    )
    assert answer.status_code == status
    error = answer.json()
    assert error["code"] == code and error["status"] == status and error["message"]
    assert error["more_info"].endswith(str(code))
    assert await depth(api) == 0


async def test_twilio_authentication_needs_the_tenants_sid_and_key(api):
    sid = await ensure_account_sid(api.ingress.sessions, tenant="bank-a")
    other_sid = await ensure_account_sid(api.ingress.sessions, tenant="bank-b")
    form = {"To": NUMBER, "From": "MyBank", "Body": "Hello"}
    for account, credentials in [
        (sid, {}),
        (sid, basic(sid, "rk_wrong")),
        (sid, basic(other_sid, api.key)),
        (other_sid, basic(sid, api.key)),
        (sid, basic(sid, api.other_key)),
    ]:
        answer = await api.client.post(
            f"/2010-04-01/Accounts/{account}/Messages.json", data=form, headers=credentials
        )
        assert answer.status_code == 401 and answer.json()["code"] == 20003
    assert await depth(api) == 0


async def test_metrics_count_each_api_and_the_document_shows_them(api):
    await sendsms(api)
    await sendsms(api, password="rk_wrong")
    await api.client.post("/v1.0/message", json=cm_body(api.key, cm_msg("12")))
    await api.client.post("/v1.0/message", json=cm_body(api.key, cm_msg(richContent={})))
    metrics = (await api.client.get("/metrics")).text
    assert 'relay_ingress_api_submits_total{api="cm",result="unsupported"}' in metrics
    assert 'relay_ingress_api_submits_total{api="kannel",result="queued"}' in metrics
    assert 'relay_ingress_api_submits_total{api="kannel",result="unauthorized"}' in metrics
    assert 'relay_ingress_api_submits_total{api="cm",result="invalid"}' in metrics
    paths = (await api.client.get("/openapi.json")).json()["paths"]
    assert {"/v1.0/message", "/cgi-bin/sendsms"} <= set(paths)
    assert "/2010-04-01/Accounts/{AccountSid}/Messages.json" in paths
    assert "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json" in paths
    assert paths["/v1.0/message"]["post"]["requestBody"]["content"]["application/json"]


async def test_kannel_and_twilio_replay_the_first_answer_to_an_idempotency_key(api):
    key = {"Idempotency-Key": "order-9"}
    first = await api.client.get("/cgi-bin/sendsms", params=kannel_params(api), headers=key)
    again = await api.client.get("/cgi-bin/sendsms", params=kannel_params(api), headers=key)
    assert (again.status_code, again.text) == (202, "0: Accepted for delivery")
    assert again.headers["x-relay-message-ids"] == first.headers["x-relay-message-ids"]
    assert again.headers["idempotent-replayed"] == "true"

    sid = await ensure_account_sid(api.ingress.sessions, tenant="bank-a")
    url = f"/2010-04-01/Accounts/{sid}/Messages.json"
    form = {"To": NUMBER, "From": "MyBank", "Body": "Hello"}
    # A key is the tenant's whatever the API: reused for another request, it is a conflict.
    reused = await api.client.post(url, data=form, headers={**basic(sid, api.key), **key})
    assert reused.status_code == 409 and reused.json()["code"] == 20409
    headers = {**basic(sid, api.key), "Idempotency-Key": "order-10"}
    created = await api.client.post(url, data=form, headers=headers)
    replayed = await api.client.post(url, data=form, headers=headers)
    assert created.status_code == replayed.status_code == 201
    assert replayed.json() == created.json() and replayed.headers["idempotent-replayed"] == "true"
    assert await depth(api) == 2


async def test_a_text_longer_than_every_site_carries_is_refused_by_each_api(
    broker_cleanup, settings_factory, store_url
):
    sites = {name: {**site, "max_segments": 1} for name, site in SITES.items()}
    settings = settings_factory(routing={"policy": "primary", "primary": "a"}, sites=sites)
    two_segments = "x" * 200
    async with api_for(settings) as api:
        cm_answer = await api.client.post(
            "/v1.0/message", json=cm_body(api.key, cm_msg(body={"type": "AUTO", "content": two_segments}))
        )
        assert cm_answer.json()["messages"][0]["messageErrorCode"] == 304
        kannel_answer = await sendsms(api, text=two_segments)
        assert kannel_answer.status_code == 400 and "segments" in kannel_answer.text
        sid = await ensure_account_sid(api.ingress.sessions, tenant="bank-a")
        twilio_answer = await api.client.post(
            f"/2010-04-01/Accounts/{sid}/Messages.json",
            data={"To": NUMBER, "From": "MyBank", "Body": two_segments},
            headers=basic(sid, api.key),
        )
        assert twilio_answer.json()["code"] == 21617
        assert await depth(api) == 0


async def test_a_body_over_the_limit_is_refused_by_each_api(broker_cleanup, settings_factory, store_url):
    settings = settings_factory(
        routing={"policy": "primary", "primary": "a"}, ingress={"max_request_bytes": 1024}
    )
    async with api_for(settings) as api:
        cm_answer = await api.client.post(
            "/v1.0/message", json=cm_body(api.key, cm_msg(reference="r" * 2000))
        )
        assert cm_answer.status_code == 413 and cm_answer.json()["errorCode"] == 202
        kannel_answer = await api.client.post("/cgi-bin/sendsms", data=kannel_params(api, text="t" * 2000))
        assert (kannel_answer.status_code, kannel_answer.text) == (413, "Request too large, rejected")
        sid = await ensure_account_sid(api.ingress.sessions, tenant="bank-a")
        twilio_answer = await api.client.post(
            f"/2010-04-01/Accounts/{sid}/Messages.json",
            data={"To": NUMBER, "From": "MyBank", "Body": "b" * 2000},
            headers=basic(sid, api.key),
        )
        assert twilio_answer.status_code == 413 and twilio_answer.json()["status"] == 413
        assert await depth(api) == 0
