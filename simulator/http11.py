"""A small, fast HTTP/1.1 server on asyncio.Protocol: keep-alive, Content-Length bodies, pipelining.

The simulator must answer several thousand requests per second on one core, which rules out a full web
framework; it needs no more of HTTP than this. Chunked request bodies are refused (clients of the relay's
contract always send a Content-Length).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

import orjson

from shared.logs import get_logger

log = get_logger("relay.platform_sim.http")

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 8 * 1024 * 1024
# Requests parsed but not yet answered on one connection before reading pauses (backpressure).
MAX_QUEUED_REQUESTS = 64


@dataclass(slots=True)
class Request:
    method: str
    path: str  # without the query string
    query: str
    headers: dict[str, str]  # names lower-case
    body: bytes
    keep_alive: bool


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: object) -> Response:
    return Response(status=status, body=orjson.dumps(payload))


# A handler answers a request, or returns None to never answer it (the connection then stays silent).
Handler = Callable[[Request], Awaitable[Response | None]]


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# Status lines made once: an HTTPStatus lookup and a format per answer showed in the simulator's profile.
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


def _encode(response: Response, *, keep_alive: bool) -> bytes:
    status_line = _STATUS_LINES.get(response.status) or f"HTTP/1.1 {response.status} \r\n".encode()
    head = b"%bContent-Type: %b\r\nContent-Length: %d\r\n" % (
        status_line,
        response.content_type.encode("latin-1"),
        len(response.body),
    )
    if not keep_alive:
        head += b"Connection: close\r\n"
    for name, value in response.headers.items():
        head += f"{name}: {value}\r\n".encode("latin-1")
    return head + b"\r\n" + response.body


class HttpProtocol(asyncio.Protocol):
    """One client connection: parses requests as bytes arrive and answers them in order."""

    def __init__(self, *, handler: Handler, connections: set[HttpProtocol]) -> None:
        self._handler = handler
        self._connections = connections
        self._buffer = bytearray()
        self._pending: deque[Request] = deque()
        self._transport: asyncio.Transport | None = None
        self._worker: asyncio.Task[None] | None = None
        self._silent = False  # a handler chose not to answer: later pipelined requests wait forever too
        self._closing = False
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport but have the same methods.
        self._transport = cast(asyncio.Transport, transport)
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._closing = True
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()

    def close(self) -> None:
        """Drop the connection at once (the simulated platform going down)."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        self._buffer += data
        try:
            while not self._closing:
                request = self._parse_one()
                if request is None:
                    break
                self._pending.append(request)
        except _BadRequest as exc:
            self._answer_error_and_close(exc)
            return
        if self._silent:
            self._pending.clear()
            return
        if self._pending and (self._worker is None or self._worker.done()):
            self._worker = asyncio.get_running_loop().create_task(self._drain())
        if len(self._pending) >= MAX_QUEUED_REQUESTS and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _parse_one(self) -> Request | None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEADER_BYTES:
                raise _BadRequest(431, "request header too large")
            return None
        try:
            head = self._buffer[:end].decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes any byte
            raise _BadRequest(400, "undecodable header") from None
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _BadRequest(400, "malformed request line")
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise _BadRequest(400, "malformed header line")
            headers[name.lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _BadRequest(411, "chunked bodies are not supported: send a Content-Length")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise _BadRequest(400, "malformed Content-Length") from None
        if length < 0:
            raise _BadRequest(400, "malformed Content-Length")
        if length > MAX_BODY_BYTES:
            raise _BadRequest(413, "request body too large")
        body_start = end + 4
        if len(self._buffer) < body_start + length:
            return None
        body = bytes(self._buffer[body_start : body_start + length])
        del self._buffer[: body_start + length]
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        path, _, query = target.partition("?")
        return Request(
            method=method, path=path, query=query, headers=headers, body=body, keep_alive=keep_alive
        )

    def _answer_error_and_close(self, exc: _BadRequest) -> None:
        self._closing = True
        self._pending.clear()
        if self._transport is not None and not self._silent:
            payload = json_response(exc.status, {"errorCode": 400, "details": exc.reason})
            self._transport.write(_encode(payload, keep_alive=False))
            self._transport.close()

    async def _drain(self) -> None:
        while self._pending and not self._closing:
            request = self._pending.popleft()
            if self._paused and len(self._pending) < MAX_QUEUED_REQUESTS // 2 and self._transport is not None:
                self._paused = False
                self._transport.resume_reading()
            try:
                response = await self._handler(request)
            except Exception:
                # A bug in a handler must not leave the client hanging. No "messages" in the body: the
                # client cannot know what was taken, which is what a real platform's crash looks like.
                log.exception("request handler failed", path=request.path)
                response = json_response(500, {"errorCode": 999, "details": "internal error"})
                request.keep_alive = False
            if self._closing or self._transport is None:
                return
            if response is None:
                self._silent = True
                self._pending.clear()
                return
            self._transport.write(_encode(response, keep_alive=request.keep_alive))
            if not request.keep_alive:
                self._closing = True
                self._transport.close()
                return


class HttpServer:
    """Listens on one address; can stop listening and drop every connection, then listen again."""

    def __init__(self, *, host: str, port: int, handler: Handler) -> None:
        self.host = host
        self.port = port
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._connections: set[HttpProtocol] = set()

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpProtocol(handler=self._handler, connections=self._connections),
            host=self.host,
            port=self.port,
            reuse_address=True,
            backlog=1024,
        )
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close the listening socket (new connects are refused) and drop every open connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for connection in list(self._connections):
            connection.close()
        self._connections.clear()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)
