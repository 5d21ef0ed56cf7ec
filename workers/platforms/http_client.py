"""What every HTTP adapter shares: one pooled client, and how transport failures are classified."""

from __future__ import annotations

import httpx

from shared.model import Outcome
from workers.platforms.base import Result

# A platform that does not complete the TCP handshake within this is treated as down: a refused or
# unanswered connect means nothing was sent, so failing fast costs nothing and speeds up failover.
MAX_CONNECT_TIMEOUT_S = 2.0
MAX_DETAIL_CHARS = 200


def make_client(
    *, timeout_s: float, concurrency: int, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """A keep-alive client with one pooled connection per concurrent request."""
    timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, MAX_CONNECT_TIMEOUT_S))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport, follow_redirects=False)


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
