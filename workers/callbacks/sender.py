"""One try of one callback: resolve its host, check the address, POST the signed body to that address.

The address checked is the address connected to: the URL's host is resolved here, each address it
resolves to is checked against `callbacks.allow_networks`, and the request goes to the first of them by
IP, with the host name in `Host` and, for https, in the TLS server name (so the certificate is checked
against the name). A name that resolves somewhere else between the submit's check and now (DNS
rebinding) is caught here, within `callbacks.resolve_cache_s`: a resolution and its check are reused that
long, and a connection is kept alive per (scheme, host, checked address, port), so a name that moves gets
new connections to its new, checked address.

Why not httpx: measured under the reports benchmark, httpx spent about 1 ms of CPU per callback; the
lean HTTP/1.1 client the platform adapters use (`shared.http1`) a fraction of that.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

from shared.callback_settings import CallbackSettings
from shared.callbacks.guard import AddressPolicy, CallbackRefused, Target, parse_url, resolve
from shared.callbacks.signing import HEADER, signature_header
from shared.callbacks.wire import CallbackJob, callback_body
from shared.http1 import Http1Client, TransportFailure

USER_AGENT = "sms-ha-relay-callbacks/1"
# Kept-alive clients (one per endpoint address); beyond this the least recently used idle one is closed.
MAX_CLIENTS = 1024
MAX_RESOLVED = 4096


@dataclass(frozen=True, slots=True, kw_only=True)
class Tried:
    """How one try ended: the endpoint's status code (None: no answer), or a refusal of its address."""

    status_code: int | None
    detail: str
    refused: bool = False


@functools.lru_cache(maxsize=4096)
def _parsed(url: str) -> Target:
    """`parse_url`, remembered: a customer's callback URL repeats for every message (a refusal, raised,
    is not remembered)."""
    return parse_url(url)


def host_of(url: str) -> str:
    """The lane a callback takes: its URL's host and port."""
    try:
        target = _parsed(url)
    except CallbackRefused:
        return "?"
    return f"{target.host}:{target.port}"


def _request_target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


@dataclass(frozen=True, slots=True)
class _Checked:
    until: float  # monotonic seconds
    target: Target
    refusal: str | None


class Sender:
    def __init__(self, settings: CallbackSettings) -> None:
        self._settings = settings
        self._policy = AddressPolicy(settings.allow_networks)
        self._checked: dict[tuple[str, str, int], _Checked] = {}
        self._clients: OrderedDict[tuple[str, str, str, int], Http1Client] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            await client.aclose()

    async def _check(self, url: str) -> _Checked:
        """The URL's addresses and the policy's verdict on them, resolved anew after `resolve_cache_s`;
        `CallbackRefused` when the host does not resolve (not cached: it may resolve on the next try)."""
        parsed = _parsed(url)
        key = (parsed.scheme, parsed.host, parsed.port)
        now = time.monotonic()
        found = self._checked.get(key)
        if found is not None and now < found.until:
            return found
        target = await resolve(parsed, timeout_s=self._settings.connect_timeout_s)
        try:
            self._policy.check(target)
            refusal = None
        except CallbackRefused as exc:
            refusal = str(exc)
        checked = _Checked(now + self._settings.resolve_cache_s, target, refusal)
        if len(self._checked) >= MAX_RESOLVED:
            self._checked = {k: v for k, v in self._checked.items() if now < v.until}
        if self._settings.resolve_cache_s > 0 and len(self._checked) < MAX_RESOLVED:
            self._checked[key] = checked
        return checked

    def _client(self, url: str, target: Target) -> Http1Client:
        address = str(target.addresses[0])
        key = (target.scheme, target.host, address, target.port)
        client = self._clients.get(key)
        if client is not None:
            self._clients.move_to_end(key)
            return client
        client = Http1Client(
            url=url,
            timeout_s=self._settings.timeout_s,
            connect_timeout_s=self._settings.connect_timeout_s,
            size=self._settings.per_host_concurrency,
            address=address,
        )
        self._clients[key] = client
        if len(self._clients) > MAX_CLIENTS:
            idle = next((k for k, c in self._clients.items() if not c.busy), None)
            if idle is not None:
                closing = asyncio.get_running_loop().create_task(self._clients.pop(idle).aclose())
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
        return client

    async def send(self, job: CallbackJob, secrets: list[str]) -> Tried:
        try:
            checked = await self._check(job.url)
        except CallbackRefused as exc:  # unresolvable now: maybe not later
            return Tried(status_code=None, detail=str(exc))
        if checked.refusal is not None:
            return Tried(status_code=None, detail=checked.refusal, refused=True)
        body = callback_body(job)
        headers = [
            ("Content-Type", "application/json"),
            ("User-Agent", USER_AGENT),
            (HEADER, signature_header(secrets, int(time.time()), body)),
        ]
        client = self._client(job.url, checked.target)
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                answer = await client.request("POST", _request_target(job.url), headers=headers, body=body)
        except (TransportFailure, TimeoutError, OSError) as exc:
            return Tried(status_code=None, detail=f"no answer: {exc!r}"[:500])
        return Tried(status_code=answer.status, detail=f"HTTP {answer.status}")
