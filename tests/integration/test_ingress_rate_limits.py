"""Tenants' limits on a real `relay ingress` process: the rate (token bucket, a batch refused whole),
open submits, queued messages, a change reaching the running process, and the limit shared by
replicas through Redis, failing open when Redis is away."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import httpx
import pytest
import redis.asyncio as aioredis

from shared.topology import site_queue
from tests.guard_helpers import cli, metric, new_key, served_ingress
from tests.helpers import missing_service
from tests.ingress_helpers import TcpProxy, drain, sms
from tests.integration.test_ingress_durability import via_port

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
REDIS_PORT = 6379


def batch(count: int, **overrides: object) -> dict[str, object]:
    return {"messages": [sms(body=f"m{n}", **overrides) for n in range(count)]}


async def test_a_rate_set_on_a_running_ingress_refuses_over_the_limit_and_queues_nothing_refused(
    tmp_path, store_url, broker_url, prefix, broker_cleanup
):
    async with served_ingress(tmp_path, broker_url=broker_url, prefix=prefix) as ingress:
        acme, bravo = await new_key(ingress.env, "acme"), await new_key(ingress.env, "bravo")
        async with ingress.client(acme) as client, ingress.client(bravo) as other:
            before = await client.post("/v1/messages/batch", json=batch(3))
            assert before.status_code == 202
            assert "RateLimit-Policy" not in before.headers  # no limit, no policy to tell

            changed_at = time.monotonic()
            await cli(["tenants", "limit", "acme", "--per-second", "0.5", "--burst", "4"], ingress.env)
            # A batch over the burst can never pass and spends nothing: it shows when the limit arrived.
            polled = 0
            while (over := await client.post("/v1/messages/batch", json=batch(5))).status_code == 202:
                polled += 5
                assert time.monotonic() - changed_at < 5, "the new limit did not reach the ingress in 5 s"
                await asyncio.sleep(0.1)
            assert over.status_code == 429 and over.headers["content-type"] == PROBLEM
            assert "burst of 4" in over.json()["detail"] and "Retry-After" not in over.headers

            fits = await client.post("/v1/messages/batch", json=batch(3))
            assert fits.status_code == 202, fits.text
            assert fits.headers["RateLimit-Policy"] == '"messages";q=4;w=8'
            assert fits.headers["RateLimit"].startswith('"messages";r=1;')

            refused = await client.post("/v1/messages/batch", json=batch(3))
            assert refused.status_code == 429 and refused.headers["content-type"] == PROBLEM
            assert refused.json()["type"].endswith("/rate-limited")
            assert int(refused.headers["Retry-After"]) >= 3  # two more tokens at 0.5/s
            assert refused.headers["RateLimit"].startswith('"messages";r=1;')

            invalid = await client.post("/v1/messages", json=sms(to="not a number"))
            assert invalid.status_code == 422 and "RateLimit" in invalid.headers  # on every answer

            assert (await other.post("/v1/messages/batch", json=batch(5))).status_code == 202

        assert await metric(ingress, 'relay_ingress_rate_limited_total{limit="rate"}') >= 2
        listed = (await cli(["tenants", "list", "--json"], ingress.env)).stdout
        assert '"tenant": "acme", "per_second": 0.5, "burst": 4' in listed

    jobs = await drain(broker_url, site_queue(prefix, "a"), expect=3 + polled + 3 + 5, timeout_s=10)
    assert len(jobs) == 11 + polled  # the refused batches left nothing behind
    assert [j.job.tenant for j in jobs].count("acme") == 6 + polled


async def test_open_submits_and_queued_messages_are_capped_per_tenant(
    tmp_path, store_url, broker_url, prefix, broker_cleanup
):
    proxy = TcpProxy(target_port=urlsplit(broker_url).port or 5672)
    await proxy.start()
    try:
        async with served_ingress(
            tmp_path, broker_url=via_port(broker_url, proxy.port), prefix=prefix
        ) as ingress:
            acme, bravo = await new_key(ingress.env, "acme"), await new_key(ingress.env, "bravo")
            await cli(["tenants", "limit", "acme", "--max-open", "2", "--max-queued", "5"], ingress.env)
            await asyncio.sleep(3)  # past one refresh of the limits
            proxy.reply_delay_s = 0.5  # every confirm comes late: submits stay open
            async with ingress.client(acme) as client, ingress.client(bravo) as other:
                answers = await asyncio.gather(*(client.post("/v1/messages", json=sms()) for _ in range(6)))
                codes = sorted(a.status_code for a in answers)
                assert codes == [202, 202, 429, 429, 429, 429], codes
                refused = next(a for a in answers if a.status_code == 429)
                assert "submits of this tenant are open" in refused.json()["detail"]
                assert refused.headers["Retry-After"] == "1"
                # Another tenant's submits are not held back by acme's.
                others = await asyncio.gather(*(other.post("/v1/messages", json=sms()) for _ in range(4)))
                assert [a.status_code for a in others] == [202] * 4

                proxy.reply_delay_s = 0.0
                accepted = [(await client.post("/v1/messages", json=sms())).status_code for _ in range(4)]
                assert accepted == [202, 202, 202, 429]  # 2 + 3 waiting for delivery: the cap of 5
                await asyncio.sleep(3)  # the store's count agrees after a refresh: nothing was settled
                full = await client.post("/v1/messages", json=sms())
                assert full.status_code == 429 and "5 messages waiting" in full.json()["detail"]
            assert await metric(ingress, 'relay_ingress_rate_limited_total{limit="open"}') == 4
    finally:
        await proxy.close()
    jobs = await drain(broker_url, site_queue(prefix, "a"), expect=9, timeout_s=10)
    assert len(jobs) == 9


async def test_replicas_share_the_limit_through_redis_and_fail_open_without_it(
    tmp_path, store_url, broker_url, prefix, broker_cleanup
):
    redis = aioredis.Redis(port=REDIS_PORT)
    try:
        await redis.ping()
    except Exception as exc:
        missing_service(f"no Redis on 127.0.0.1:{REDIS_PORT}: {exc!r}")
    proxy = TcpProxy(target_port=REDIS_PORT)
    await proxy.start()
    try:
        async with served_ingress(
            tmp_path,
            broker_url=broker_url,
            prefix=prefix,
            RELAY_INGRESS__PROCESSES="2",
            RELAY_GUARD__REDIS_URL=f"redis://127.0.0.1:{proxy.port}/0",
        ) as ingress:
            key = await new_key(ingress.env, "acme")
            await cli(["tenants", "limit", "acme", "--per-second", "0.2", "--burst", "10"], ingress.env)
            await asyncio.sleep(3)
            started = time.monotonic()
            # A fresh connection per submit, so both processes take a share.
            answers = []
            for _ in range(4):
                async with ingress.client(key, limits=_one_use()) as client:
                    answers += await asyncio.gather(
                        *(client.post("/v1/messages", json=sms()) for _ in range(10))
                    )
            accepted = sum(a.status_code == 202 for a in answers)
            # Each process alone would have taken 10; together they take the one shared burst.
            assert 10 <= accepted <= 10 + int((time.monotonic() - started) * 0.2) + 1, accepted
            assert {a.status_code for a in answers} == {202, 429}

            # A new limit, a fresh bucket: with Redis away its burst of one would hold back nine of ten.
            await cli(["tenants", "limit", "acme", "--per-second", "0.2", "--burst", "1"], ingress.env)
            await asyncio.sleep(3)
            await proxy.cut()
            async with ingress.client(key, limits=_one_use()) as client:
                away = await asyncio.gather(*(client.post("/v1/messages", json=sms()) for _ in range(10)))
            assert [a.status_code for a in away] == [202] * 10  # fail open, never refuse everything
            opened = 0.0
            for _ in range(10):  # two processes: ask until both have answered
                opened += await metric(ingress, "relay_ingress_rate_limit_fail_open_total")
            assert opened > 0
        assert "rate limits fail open: Redis cannot be asked" in ingress.log.read_text()
    finally:
        await proxy.close()
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:ratelimit:*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()
    await drain(broker_url, site_queue(prefix, "a"), expect=accepted + 10, timeout_s=10)


def _one_use() -> httpx.Limits:
    return httpx.Limits(max_keepalive_connections=0)


async def test_the_drop_in_apis_answer_a_tenant_over_its_rate_in_their_own_words(
    tmp_path, store_url, broker_url, prefix, broker_cleanup
):
    async with served_ingress(tmp_path, broker_url=broker_url, prefix=prefix) as ingress:
        created = (await cli(["keys", "create", "--tenant", "acme"], ingress.env)).stdout.strip().splitlines()
        sid = next(line for line in created if line.startswith("account SID: ")).removeprefix("account SID: ")
        key = created[-1]
        await cli(["tenants", "limit", "acme", "--per-second", "0.01", "--burst", "1"], ingress.env)
        await asyncio.sleep(3)
        kannel = {"username": "acme", "password": key, "to": "+31612345678", "from": "MyBank", "text": "hi"}
        cm = {
            "messages": {
                "authentication": {"producttoken": key},
                "msg": [{"from": "MyBank", "to": [{"number": "0031612345678"}], "body": {"content": "hi"}}],
            }
        }
        twilio = {"To": "+31612345678", "From": "MyBank", "Body": "hi"}
        async with httpx.AsyncClient(base_url=ingress.url, timeout=10) as client:
            first = await client.get("/cgi-bin/sendsms", params=kannel)
            assert (first.status_code, first.text) == (202, "0: Accepted for delivery")  # the burst of one
            again = await client.get("/cgi-bin/sendsms", params=kannel)
            assert again.status_code == 429 and "Too many requests" in again.text
            assert int(again.headers["Retry-After"]) > 1
            refused = await client.post("/v1.0/message", json=cm)
            assert refused.status_code == 429 and "Too many requests" in refused.json()["details"]
            plain = await client.post("/v1.0/message", content=b"{}", headers={"Content-Type": "text/plain"})
            assert plain.status_code == 415
            create = await client.post(
                f"/2010-04-01/Accounts/{sid}/Messages.json", data=twilio, auth=(sid, key)
            )
            assert create.status_code == 429 and create.json()["code"] == 20429
        assert await metric(ingress, 'relay_ingress_rate_limited_total{limit="rate"}') == 3
    assert len(await drain(broker_url, site_queue(prefix, "a"), expect=1, timeout_s=5)) == 1
