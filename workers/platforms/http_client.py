"""What HTTP adapters share: a pool of keep-alive connections; how transport failures are classified."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

import httpx

from shared.model import Outcome
from workers.platforms.base import Result

# A platform that does not complete the TCP handshake within this is treated as down: a refused or
# unanswered connect means nothing was sent, so failing fast costs nothing and speeds up failover.
MAX_CONNECT_TIMEOUT_S = 2.0
MAX_DETAIL_CHARS = 200


class ClientPool:
    """`size` keep-alive connections, each in its own single-connection httpx client.

    One shared httpx pool of N connections costs O(N) work per request in httpcore's pool bookkeeping:
    measured at 64 concurrent requests it spent several times more CPU per request than at 1. Giving each
    in-flight request its own client keeps the cost per request flat however high the concurrency.
    """

    def __init__(
        self,
        *,
        url: str,
        timeout_s: float,
        size: int,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, MAX_CONNECT_TIMEOUT_S))
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        # One TLS context for all clients: building one loads the CA bundle, which takes a noticeable time.
        verify: ssl.SSLContext | bool = ssl.create_default_context() if url.startswith("https://") else False
        self._idle: asyncio.LifoQueue[httpx.AsyncClient] = asyncio.LifoQueue()
        self._clients = [
            httpx.AsyncClient(
                timeout=timeout, limits=limits, transport=transport, verify=verify, follow_redirects=False
            )
            for _ in range(size)
        ]
        for client in self._clients:
            self._idle.put_nowait(client)

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        """An idle client (waits for one when all are busy); LIFO so warm connections are reused first."""
        client = await self._idle.get()
        try:
            yield client
        finally:
            self._idle.put_nowait(client)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


def short(text: str | bytes) -> str:
    """A platform's answer cut to a size fit for the status history."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."


TRANSPORT_ERRORS = (httpx.HTTPError, httpx.InvalidURL)


def classify_transport_error(exc: httpx.HTTPError | httpx.InvalidURL) -> Result:
    """Unavailable when the request certainly never reached the platform whole, else ambiguous."""
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        # No connection (refused, DNS failure, unreachable) or none free: nothing was sent.
        return Result(outcome=Outcome.UNAVAILABLE, detail=short(f"{name}: {exc}"))
    if isinstance(exc, httpx.WriteError | httpx.WriteTimeout):
        # The request was not handed over whole, so its Content-Length was never met: a server cannot
        # have acted on it.
        return Result(outcome=Outcome.UNAVAILABLE, detail=short(f"{name}: {exc}"))
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.InvalidURL):
        # Our side could not even form the request (bad URL in the configuration).
        return Result(outcome=Outcome.UNAVAILABLE, detail=short(f"{name}: {exc}"))
    # Read timeout, reset or close after the request was sent, garbage instead of HTTP: the platform may
    # have taken the message and lost only the answer.
    return Result(outcome=Outcome.AMBIGUOUS, detail=short(f"{name}: {exc}" if str(exc) else name))
