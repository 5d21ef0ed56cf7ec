"""Where a callback may go: an ``http(s)`` URL whose host resolves to public addresses only.

Loopback, link-local, private and other non-global addresses (and multicast) are refused unless
`callbacks.allow_networks` names a range holding them: a callback is a request the relay makes on a
customer's word, and must not reach the relay's own network. The ingress checks at submit; the
callback worker checks again the address it is about to connect to, since a name can resolve elsewhere
by then (DNS rebinding), and connects to exactly that address.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from urllib.parse import urlsplit

from shared.errors import PermanentError

IPAddress = IPv4Address | IPv6Address
MAX_URL_CHARS = 2048
SCHEMES = {"http": 80, "https": 443}


class CallbackRefused(PermanentError):
    """A callback URL the relay will not call; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A callback URL taken apart, with the addresses its host resolved to."""

    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...] = ()


def parse_url(url: object) -> Target:
    """The URL's scheme, host and port, or `CallbackRefused` saying what is wrong with it."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise CallbackRefused(f"must be an http or https URL of at most {MAX_URL_CHARS} characters")
    if any(ord(c) <= 32 or ord(c) == 127 for c in url):
        raise CallbackRefused("must not hold spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise CallbackRefused(f"not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise CallbackRefused("must be an http or https URL")
    if not parts.hostname:
        raise CallbackRefused("must name a host")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("must not carry a user name or password")
    return Target(scheme=scheme, host=parts.hostname, port=port or SCHEMES[scheme])


def literal_address(host: str) -> IPAddress | None:
    try:
        return ip_address(host)
    except ValueError:
        return None


class AddressPolicy:
    """Which addresses callbacks may reach."""

    def __init__(self, allow_networks: Sequence[str]) -> None:
        self._allowed = tuple(ip_network(text, strict=False) for text in allow_networks)

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` is refused, or None when a callback may go there."""
        mapped = address.ipv4_mapped if isinstance(address, IPv6Address) else None
        plain: IPAddress = mapped or address
        if any(plain.version == net.version and plain in net for net in self._allowed):
            return None
        for kind, found in (
            ("a loopback address", plain.is_loopback),
            ("a link-local address", plain.is_link_local),
            ("a multicast address", plain.is_multicast),
            ("the unspecified address", plain.is_unspecified),
            ("a private address", plain.is_private),
            ("not a globally routable address", not plain.is_global),
        ):
            if found:
                return f"{plain} is {kind}"
        return None

    def check(self, target: Target) -> Target:
        """`target` when every address it resolved to is allowed, else `CallbackRefused`."""
        if not target.addresses:
            raise CallbackRefused(f"{target.host} does not resolve to any address")
        for address in target.addresses:
            why = self.refusal(address)
            if why is not None:
                where = why if target.host == str(address) else f"{target.host} resolves to {why}"
                raise CallbackRefused(
                    f"{where}, which callbacks may not reach unless callbacks.allow_networks allows it"
                )
        return target


async def resolve(target: Target, *, timeout_s: float) -> Target:
    """`target` with the addresses its host resolves to now; `CallbackRefused` when it does not."""
    literal = literal_address(target.host)
    if literal is not None:
        return Target(scheme=target.scheme, host=target.host, port=target.port, addresses=(literal,))
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise CallbackRefused(f"{target.host} cannot be resolved: {exc}") from None
    addresses = tuple(dict.fromkeys(ip_address(info[4][0]) for info in infos))
    return Target(scheme=target.scheme, host=target.host, port=target.port, addresses=addresses)


class CachedResolver:
    """Resolves and checks hosts, remembering each verdict for `ttl_s`: a submit must not wait on DNS
    for every message to the same endpoint."""

    def __init__(self, policy: AddressPolicy, *, ttl_s: float = 60.0, timeout_s: float = 2.0) -> None:
        self._policy = policy
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._verdicts: dict[tuple[str, int], tuple[float, str | None]] = {}

    async def refusal(self, url: str) -> str | None:
        """Why callbacks to `url` are refused, or None when they may go there."""
        try:
            target = parse_url(url)
        except CallbackRefused as exc:
            return str(exc)
        key = (target.host, target.port)
        now = time.monotonic()
        cached = self._verdicts.get(key)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        try:
            self._policy.check(await resolve(target, timeout_s=self._timeout_s))
            why = None
        except CallbackRefused as exc:
            why = str(exc)
        if len(self._verdicts) > 10_000:
            self._verdicts.clear()
        self._verdicts[key] = (now, why)
        return why
