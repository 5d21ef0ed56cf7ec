"""A request body read through ASGI, and what is left of it read and dropped before an early answer.

Clients such as Python's urllib and Java's HttpURLConnection send the whole body before they read a
byte of the answer, and urllib asks for `Connection: close`. An answer given before the body was read
(413, 401, 415, 429) is then followed by uvicorn closing a socket with unread data, which the kernel
answers with a reset: the client sees "connection reset", never the answer. So the rest of the body,
up to `guard.drain_max_bytes`, is read and dropped first (RFC 9112 9.6 asks a server to keep reading
for this reason); a body larger than that gets the answer with `Connection: close` at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

Receive = Any
Send = Any


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


def has_body(headers: Mapping[bytes, bytes]) -> bool:
    length = headers.get(b"content-length")
    if length is not None:
        return length.strip() not in (b"", b"0")
    return b"transfer-encoding" in headers


class RequestBody:
    """The body of one request as chunks, remembering whether all of it has been read."""

    __slots__ = ("_receive", "complete")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.complete = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while not self.complete:
            event = await self._receive()
            if event["type"] == "http.disconnect":
                raise ClientGone()
            self.complete = not event.get("more_body", False)
            chunk = event.get("body", b"")
            if chunk:
                yield chunk

    async def drain(self, limit_bytes: int) -> bool:
        """Read and drop the rest of the body, up to `limit_bytes`; whether all of it was read."""
        dropped = 0
        try:
            async for chunk in self:
                dropped += len(chunk)
                if dropped > limit_bytes:
                    return False
        except ClientGone:
            return False
        return True


async def answer_after_body(
    send: Send, body: RequestBody, headers: Mapping[bytes, bytes], limit_bytes: int
) -> Send:
    """`send`, or when the body was left unread a `send` that takes the rest of it first (or closes)."""
    if body.complete or not has_body(headers):
        return send
    # A client waiting for 100 Continue has sent no body and sends none after a final answer.
    expecting = headers.get(b"expect", b"").lower() == b"100-continue"
    whole = False if expecting else await body.drain(limit_bytes)
    if whole:
        return send

    async def closing(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await send(message)

    return closing


class DrainingApp:
    """Wraps an ASGI app (the FastAPI routes) so no answer goes out before the request's body is read."""

    def __init__(self, app: Any, *, limit_bytes: int) -> None:
        self._app = app
        self._limit_bytes = limit_bytes

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = dict(scope["headers"])
        if not has_body(headers):
            await self._app(scope, receive, send)
            return
        body = RequestBody(receive)
        events = body.__aiter__()

        async def tracked_receive() -> dict[str, Any]:
            if body.complete:
                return {"type": "http.request", "body": b"", "more_body": False}
            try:
                chunk = await events.__anext__()
            except StopAsyncIteration:
                return {"type": "http.request", "body": b"", "more_body": False}
            except ClientGone:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": chunk, "more_body": not body.complete}

        async def draining_send(message: dict[str, Any]) -> None:
            target = send
            if message["type"] == "http.response.start":
                target = await answer_after_body(send, body, headers, self._limit_bytes)
            await target(message)

        await self._app(scope, tracked_receive, draining_send)
