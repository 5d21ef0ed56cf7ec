"""One try of one callback: resolve its host, check the address, POST the signed body to that address.

The address checked is the address connected to: the URL's host is resolved here, each address it
resolves to is checked against `callbacks.allow_networks`, and the request goes to the first of them by
IP, with the host name in `Host` and, for https, in the TLS server name (so the certificate is checked
against the name). A name that resolves somewhere else between the submit's check and now (DNS
rebinding) is caught here.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx

from shared.callback_settings import CallbackSettings
from shared.callbacks.guard import AddressPolicy, CallbackRefused, Target, parse_url, resolve
from shared.callbacks.signing import HEADER, signature_header
from shared.callbacks.wire import CallbackJob, callback_body

USER_AGENT = "sms-ha-relay-callbacks/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Tried:
    """How one try ended: the endpoint's status code (None: no answer), or a refusal of its address."""

    status_code: int | None
    detail: str
    refused: bool = False


def host_of(url: str) -> str:
    """The lane a callback takes: its URL's host and port."""
    try:
        target = parse_url(url)
    except CallbackRefused:
        return "?"
    return f"{target.host}:{target.port}"


def _by_address(url: str, target: Target) -> str:
    parts = urlsplit(url)
    address = target.addresses[0]
    host = f"[{address}]" if address.version == 6 else str(address)
    return urlunsplit(parts._replace(netloc=f"{host}:{target.port}"))


def _host_header(url: str) -> str:
    netloc = urlsplit(url).netloc
    return netloc.rpartition("@")[2]


class Sender:
    def __init__(self, settings: CallbackSettings) -> None:
        self._settings = settings
        self._policy = AddressPolicy(settings.allow_networks)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            follow_redirects=False,  # a redirect could lead anywhere, past the address check
            trust_env=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def send(self, job: CallbackJob, secrets: list[str]) -> Tried:
        try:
            target = await resolve(parse_url(job.url), timeout_s=self._settings.connect_timeout_s)
        except CallbackRefused as exc:  # unresolvable now: maybe not later
            return Tried(status_code=None, detail=str(exc))
        try:
            self._policy.check(target)
        except CallbackRefused as exc:
            return Tried(status_code=None, detail=str(exc), refused=True)
        body = callback_body(job)
        headers = {
            "Content-Type": "application/json",
            "Host": _host_header(job.url),
            "User-Agent": USER_AGENT,
            HEADER: signature_header(secrets, int(time.time()), body),
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            async with asyncio.timeout(self._settings.timeout_s):
                answer = await self._client.post(
                    _by_address(job.url, target), content=body, headers=headers, extensions=extensions
                )
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            return Tried(status_code=None, detail=f"no answer: {exc!r}"[:500])
        return Tried(status_code=answer.status_code, detail=f"HTTP {answer.status_code}")
