"""Slow and hostile clients against a real `relay ingress` process: slowloris heads and bodies, idle
connections, a thousand idle keep-alive connections beside a normal submit, 413 for clients that send
the whole body first (urllib), 415 and 422, and the operator paths off loopback."""

from __future__ import annotations

import asyncio
import json
import resource
import time
import urllib.error
import urllib.request

import httpx
import pytest

from tests.guard_helpers import new_key, served_ingress
from tests.helpers import free_port, wait_for_port
from tests.ingress_helpers import sms

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
IDLE_CONNECTIONS = 1000


async def closed_by_server(reader: asyncio.StreamReader, timeout_s: float) -> float:
    """Seconds until the server closed the connection (EOF or reset), reading whatever it sent."""
    started = time.monotonic()
    async with asyncio.timeout(timeout_s):
        try:
            while await reader.read(4096):
                pass
        except ConnectionResetError:
            pass
    return time.monotonic() - started


async def test_slow_heads_slow_bodies_and_idle_connections_are_closed(
    tmp_path, store_url, broker_url, prefix, broker_cleanup
):
    async with served_ingress(
        tmp_path,
        broker_url=broker_url,
        prefix=prefix,
        RELAY_GUARD__HEADER_TIMEOUT_S="2",
        RELAY_GUARD__BODY_TIMEOUT_S="3",
        RELAY_GUARD__IDLE_TIMEOUT_S="4",
    ) as ingress:
        key = await new_key(ingress.env, "acme")

        async def slow_head(writer: asyncio.StreamWriter) -> None:
            writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: relay\r\n")
            for n in range(30):  # a header line a second, for ever as far as the server can tell
                await asyncio.sleep(0.5)
                writer.write(f"X-Slow-{n}: 1\r\n".encode())

        async def slow_body(writer: asyncio.StreamWriter) -> None:
            head = (
                f"POST /v1/messages HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {key}\r\n"
                "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
            )
            writer.write(head.encode())
            for _ in range(200):
                await asyncio.sleep(0.5)
                writer.write(b" ")

        async def silent(writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(30)

        async def idle_after_a_request(writer: asyncio.StreamWriter) -> None:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
            await asyncio.sleep(30)

        async def measure(client) -> float:
            reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
            sending = asyncio.create_task(client(writer))
            try:
                return await closed_by_server(reader, timeout_s=20)
            finally:
                sending.cancel()
                writer.close()

        head_s, body_s, silent_s, idle_s = await asyncio.gather(
            measure(slow_head), measure(slow_body), measure(silent), measure(idle_after_a_request)
        )
        assert 1.5 < head_s < 4, head_s
        assert 2.5 < body_s < 5, body_s
        assert 1.5 < silent_s < 4, silent_s
        assert 3.5 < idle_s < 7, idle_s
        # Meanwhile a normal client is served as ever.
        async with ingress.client(key) as client:
            assert (await client.post("/v1/messages", json=sms())).status_code == 202


async def test_a_thousand_idle_keep_alive_connections_do_not_hold_up_a_submit(
    tmp_path, store_url, broker_url, prefix, broker_cleanup
):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    async with served_ingress(
        tmp_path, broker_url=broker_url, prefix=prefix, RELAY_GUARD__IDLE_TIMEOUT_S="15"
    ) as ingress:
        key = await new_key(ingress.env, "acme")

        async def keep_alive() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection("127.0.0.1", ingress.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            await reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
            return reader, writer

        idle = []
        for start in range(0, IDLE_CONNECTIONS, 100):
            idle += await asyncio.gather(
                *(keep_alive() for _ in range(start, min(start + 100, IDLE_CONNECTIONS)))
            )
        opened_at = time.monotonic()
        try:
            async with ingress.client(key) as client:
                started = time.monotonic()
                answer = await client.post("/v1/messages", json=sms())
                took_s = time.monotonic() - started
            assert answer.status_code == 202
            assert took_s < 1.0, took_s
            # ... and the idle ones are closed by the server when their idle time is up.
            await asyncio.gather(*(closed_by_server(reader, timeout_s=40) for reader, _ in idle))
            assert 14 < time.monotonic() - opened_at < 25  # idle_timeout_s of 15 after their last answer
        finally:
            for _, writer in idle:
                writer.close()


def urllib_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
    """POST as urllib does it: the whole body sent before a byte of the answer is read."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.headers["Content-Type"], answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


async def test_clients_that_send_the_whole_body_first_get_their_answer(
    tmp_path, store_url, broker_url, prefix, broker_cleanup
):
    async with served_ingress(tmp_path, broker_url=broker_url, prefix=prefix) as ingress:
        key = await new_key(ingress.env, "acme")
        url = f"{ingress.url}/v1/messages"
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        for size in (2_000_000, 16_000_000, 24_000_000):
            status, media_type, body = await asyncio.to_thread(urllib_post, url, b"x" * size, auth)
            assert (status, media_type) == (413, PROBLEM), size
            assert json.loads(body)["type"].endswith("/request-too-large")
        status, _, _ = await asyncio.to_thread(
            urllib_post, url, b"x" * 8_000_000, {"Authorization": "Bearer rk_wrong"}
        )
        assert status == 401
        plain = await asyncio.to_thread(urllib_post, url, b"hello", {**auth, "Content-Type": "text/plain"})
        assert plain[:2] == (415, PROBLEM)
        accepted = await asyncio.to_thread(urllib_post, url, json.dumps(sms()).encode(), auth)
        assert accepted[0] == 202

        async with ingress.client(key) as client:
            for field, value in (("body", "bell\x07"), ("from", " . "), ("to", "+31612345678 ext. 4")):
                answer = await client.post("/v1/messages", json=sms(**{field: value}))
                assert answer.status_code == 422 and answer.headers["content-type"] == PROBLEM
                assert [e["field"] for e in answer.json()["errors"]] == [field]
            premium = await client.post("/v1/messages", json=sms(to="+31900123456"))
            assert premium.json()["errors"][0]["message"] == "premium-rate numbers are not accepted"


async def test_operator_paths_off_loopback_need_the_admin_port_or_the_token(
    tmp_path, store_url, broker_url, prefix, broker_cleanup
):
    admin_port = free_port()
    async with served_ingress(
        tmp_path,
        broker_url=broker_url,
        prefix=prefix,
        RELAY_INGRESS__HOST="0.0.0.0",
        RELAY_GUARD__ADMIN_PORT=str(admin_port),
        RELAY_GUARD__ADMIN_TOKEN="s3cret-admin",
    ) as ingress:
        await asyncio.to_thread(wait_for_port, admin_port, timeout_s=30)
        async with (
            httpx.AsyncClient(base_url=ingress.url) as api,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin_port}") as admin,
        ):
            for path in ("/metrics", "/openapi.json", "/docs"):
                refused = await api.get(path)
                assert refused.status_code == 404 and refused.headers["content-type"] == PROBLEM, path
                assert (await api.get(path, headers={"Authorization": "Bearer wrong"})).status_code == 404
                opened = await api.get(path, headers={"Authorization": "Bearer s3cret-admin"})
                assert opened.status_code == 200, path
                assert (await admin.get(path)).status_code == 200, path
            assert (await api.get("/healthz")).status_code == 200
            assert (await admin.get("/healthz")).status_code == 200
            assert (await admin.post("/v1/messages", json=sms())).status_code == 404  # only operators'

            page = (await admin.get("/docs")).text
            assert "/docs/assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
            script = await admin.get("/docs/assets/swagger-ui-bundle.js")
            assert script.status_code == 200 and len(script.content) > 100_000
