"""The callback sender against a real endpoint on 127.0.0.1: kept-alive connections, signed bodies, the
address check at send time, and a resolution reused only for `resolve_cache_s`."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from ipaddress import ip_address

import h11
import pytest

from shared.callback_settings import CallbackSettings
from shared.callbacks.guard import Target
from shared.callbacks.wire import CallbackJob, callback_body
from workers.callbacks import sender as sender_module
from workers.callbacks.sender import Sender

SECRET = "whsec_test"


@dataclass
class Endpoint:
    port: int = 0
    connections: int = 0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status: int = 204

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        protocol = h11.Connection(our_role=h11.SERVER)
        headers: dict[str, str] = {}
        body = b""
        while True:
            event = protocol.next_event()
            if event is h11.NEED_DATA:
                chunk = await reader.read(65_536)
                protocol.receive_data(chunk)
                if not chunk:
                    break
            elif isinstance(event, h11.Request):
                headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                body = b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.requests.append((headers, body))
                writer.write(protocol.send(h11.Response(status_code=self.status, headers=[])) or b"")
                writer.write(protocol.send(h11.EndOfMessage()) or b"")
                protocol.start_next_cycle()
            else:
                break
        writer.close()


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    found = Endpoint()
    server = await asyncio.start_server(found.serve, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    yield found
    server.close()


def _job(url: str, n: int = 1) -> CallbackJob:
    return CallbackJob(
        event_id=f"e{n}", tenant="t", url=url, message_id=f"m{n}", reference=None,
        status="delivered", site="a", at=1_700_000_000.0,
    )  # fmt: skip


async def test_callbacks_share_a_kept_alive_connection_signed_and_named_by_host(endpoint: Endpoint) -> None:
    sender = Sender(CallbackSettings(allow_networks=["127.0.0.0/8"]))
    url = f"http://localhost:{endpoint.port}/cb?x=1"
    try:
        tried = [await sender.send(_job(url, n), [SECRET]) for n in range(3)]
    finally:
        await sender.close()
    assert [t.status_code for t in tried] == [204, 204, 204]
    assert endpoint.connections == 1
    for n, (headers, body) in enumerate(endpoint.requests):
        assert body == callback_body(_job(url, n))
        assert headers["host"] == f"localhost:{endpoint.port}"
        stamp, _, mac = headers["x-relay-signature"].partition(",v1=")
        expected = hmac.new(SECRET.encode(), stamp[2:].encode() + b"." + body, hashlib.sha256)
        assert mac == expected.hexdigest()


async def test_an_address_outside_the_allowed_networks_is_refused_before_connecting(
    endpoint: Endpoint,
) -> None:
    sender = Sender(CallbackSettings())
    try:
        tried = await sender.send(_job(f"http://localhost:{endpoint.port}/cb"), [SECRET])
    finally:
        await sender.close()
    assert tried.refused and tried.status_code is None and "loopback" in tried.detail
    assert endpoint.connections == 0


async def test_a_name_that_moves_is_checked_again_once_its_resolution_is_stale(
    endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = ["127.0.0.1"]

    async def resolve(target: Target, *, timeout_s: float) -> Target:
        return Target(
            scheme=target.scheme, host=target.host, port=target.port, addresses=(ip_address(answers[0]),)
        )

    monkeypatch.setattr(sender_module, "resolve", resolve)
    url = f"http://hooks.example:{endpoint.port}/cb"
    cached = Sender(CallbackSettings(allow_networks=["127.0.0.0/8"], resolve_cache_s=60))
    fresh = Sender(CallbackSettings(allow_networks=["127.0.0.0/8"], resolve_cache_s=0))
    try:
        assert (await cached.send(_job(url), [SECRET])).status_code == 204
        assert (await fresh.send(_job(url), [SECRET])).status_code == 204
        answers[0] = "10.0.0.1"  # rebound to a private address
        assert (await cached.send(_job(url), [SECRET])).status_code == 204  # within its TTL
        moved = await fresh.send(_job(url), [SECRET])
    finally:
        await cached.close()
        await fresh.close()
    assert moved.refused and "10.0.0.1" in moved.detail
    assert endpoint.requests[0][0]["host"] == f"hooks.example:{endpoint.port}"
