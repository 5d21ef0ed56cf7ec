"""Callbacks without services: the signature (checked with an HMAC computed here, apart from the
relay's code), the address guard, the retry schedule and the per-host lanes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from ipaddress import ip_address

import orjson
import pytest

from ingress.callback_jobs import callback_jobs
from shared.callbacks.guard import AddressPolicy, CallbackRefused, Target, parse_url
from shared.callbacks.signing import signature_header, verify
from shared.callbacks.wire import CallbackJob, callback_body, decode_callback, encode_callback, event_id
from shared.store.status_changes import StatusChange
from workers.callbacks.lanes import LaneFull, Lanes
from workers.callbacks.policy import Next, decide, schedule


def _independent(secret: str, header: str, body: bytes) -> tuple[str, list[str]]:
    fields = [part.split("=", 1) for part in header.split(",")]
    t = next(v for k, v in fields if k == "t")
    return t, [hmac.new(secret.encode("utf-8"), f"{t}.".encode() + body, hashlib.sha256).hexdigest()]


def test_signature_is_the_hmac_of_time_dot_body_with_the_secrets_utf8_bytes() -> None:
    body = b'{"id":"m1","status":"delivered","text":"\xc3\xa9"}'
    header = signature_header(["whsec_\u00e9ab"], 1_700_000_000, body)
    t, expected = _independent("whsec_\u00e9ab", header, body)
    assert t == "1700000000"
    assert header == f"t=1700000000,v1={expected[0]}"
    assert verify(header, body, "whsec_\u00e9ab", now_s=1_700_000_100)
    assert not verify(header, body + b" ", "whsec_\u00e9ab", now_s=1_700_000_100)
    assert not verify(header, body, "another", now_s=1_700_000_100)
    assert not verify(header, body, "whsec_\u00e9ab", now_s=1_700_001_000)  # too old: a replay


def test_after_a_rotation_both_secrets_sign_and_each_verifies() -> None:
    body = b"{}"
    header = signature_header(["new", "old"], 42, body)
    v1 = [v for k, v in (p.split("=", 1) for p in header.split(",")) if k == "v1"]
    assert v1 == [_independent("new", header, body)[1][0], _independent("old", header, body)[1][0]]
    assert verify(header, body, "old", now_s=42) and verify(header, body, "new", now_s=42)
    with pytest.raises(ValueError):
        signature_header([], 42, body)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/x", "http or https"),
        ("example.com/x", "http or https"),
        ("https:///x", "host"),
        ("https://user:pw@example.com/", "user name"),
        ("https://exa mple.com/", "spaces"),
        ("https://example.com:99999/", "not a URL"),
        (12, "http or https"),
    ],
)
def test_only_http_urls_with_a_host(url: object, why: str) -> None:
    with pytest.raises(CallbackRefused, match=why):
        parse_url(url)


def test_url_parts() -> None:
    assert parse_url("HTTPS://Example.com/cb?x=1") == Target(scheme="https", host="example.com", port=443)
    assert parse_url("http://[::1]:8080/").port == 8080


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("::ffff:10.0.0.1", "private"),  # IPv4-mapped
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "not a globally routable"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_internal_addresses_are_refused(address: str, kind: str) -> None:
    policy = AddressPolicy([])
    why = policy.refusal(ip_address(address))
    assert why is not None and kind in why
    target = Target(scheme="https", host="cb.example", port=443, addresses=(ip_address(address),))
    with pytest.raises(CallbackRefused, match=r"callbacks\.allow_networks"):
        policy.check(target)


def test_public_addresses_pass_and_allowed_networks_open_only_themselves() -> None:
    assert AddressPolicy([]).refusal(ip_address("93.184.216.34")) is None
    assert AddressPolicy([]).refusal(ip_address("2606:2800:220:1::1")) is None
    policy = AddressPolicy(["127.0.0.0/8", "10.9.0.0/16"])
    assert policy.refusal(ip_address("127.0.0.1")) is None
    assert policy.refusal(ip_address("10.9.3.4")) is None
    assert policy.refusal(ip_address("10.8.3.4")) is not None
    assert policy.refusal(ip_address("::1")) is not None  # 127/8 does not open IPv6 loopback
    # One refused address among several refuses the name: it could be the one connected to.
    mixed = Target(
        scheme="http", host="x", port=80, addresses=(ip_address("93.184.216.34"), ip_address("10.0.0.1"))
    )
    with pytest.raises(CallbackRefused):
        AddressPolicy([]).check(mixed)


def test_retry_schedule_spans_hours_then_dies() -> None:
    delays = [10, 60, 300, 1800, 7200]
    assert schedule(delays, 8) == [10, 60, 300, 1800, 7200, 7200, 7200]
    assert sum(schedule(delays, 8)) / 3600 > 6
    assert decide(500, attempt=1, max_attempts=8, retry_delays_s=delays).delay_s == 10
    assert decide(None, attempt=3, max_attempts=8, retry_delays_s=delays).delay_s == 300
    assert decide(503, attempt=8, max_attempts=8, retry_delays_s=delays).next is Next.DEAD
    assert decide(204, attempt=8, max_attempts=8, retry_delays_s=delays).next is Next.DONE
    assert decide(410, attempt=1, max_attempts=8, retry_delays_s=delays).next is Next.GONE
    assert decide(301, attempt=1, max_attempts=8, retry_delays_s=delays).next is Next.RETRY


async def test_a_full_lane_refuses_at_once_and_other_hosts_go_on() -> None:
    lanes = Lanes(concurrency=1, waiting=1)
    release = asyncio.Event()

    async def hold(host: str) -> None:
        async with lanes.slot(host):
            await release.wait()

    running = [asyncio.create_task(hold("slow:443")) for _ in range(2)]
    await asyncio.sleep(0)
    assert lanes.held("slow:443") == 2
    with pytest.raises(LaneFull):
        async with lanes.slot("slow:443"):
            pass
    async with asyncio.timeout(1):
        async with lanes.slot("fast:443"):
            pass
    release.set()
    await asyncio.gather(*running)
    assert lanes.held("slow:443") == 0


def test_callback_jobs_only_for_messages_with_somewhere_to_call_and_with_public_texts() -> None:
    common = {"old": "accepted", "site": "a", "at": 1.0, "tenant": "t", "reference": "r"}
    changes = [
        StatusChange(message_id="m1", new="delivered", callback_url="https://x.example/", **common),
        StatusChange(message_id="m2", new="delivered", callback_url=None, **common),
        StatusChange(
            message_id="m3",
            new="rejected",
            callback_url="https://x.example/",
            error_code="rejected",
            error_detail="403 Not routable at 10.0.0.7",
            **common,
        ),
    ]
    jobs = callback_jobs(changes)
    assert [j.message_id for j in jobs] == ["m1", "m3"]
    assert jobs[0].event_id == event_id("m1", "delivered") != event_id("m1", "rejected")
    assert jobs[1].error_code == "rejected" and "10.0.0.7" not in (jobs[1].error_text or "")


def test_wire_round_trip_and_body_fields() -> None:
    job = CallbackJob(
        event_id="e" * 32,
        tenant="t",
        url="https://x.example/",
        message_id="m",
        reference=None,
        status="expired",
        site="b",
        at=0.0,
        error_code="expired",
        error_text="late",
    )
    assert decode_callback(encode_callback(job)) == job
    body = orjson.loads(callback_body(job))
    assert body == {
        "id": "m",
        "reference": None,
        "status": "expired",
        "site": "b",
        "at": "1970-01-01T00:00:00+00:00",
        "error": {"code": "expired", "text": "late"},
        "event_id": "e" * 32,
    }
