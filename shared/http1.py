"""A lean HTTP/1.1 client (platform adapters, callbacks, the simulator's reports): an asyncio protocol,
httptools (llhttp, in C) to read answers, keep-alive.

Why not httpx: measured against the simulator on the 2-core test machine, httpx.AsyncClient spent about
1.5-2 ms of CPU per request (its pool bookkeeping alone grows with the number of connections), while h11 on
asyncio streams spent about 0.3 ms. For one-message-per-request platforms (Kannel, Jasmin) the adapter is
the worker's largest cost, so this is the difference between a worker that keeps up with its platform and
one that does not. h11 parses in Python and asyncio's streams add a buffer, a waiter and a timeout scope per
read; here the bytes go from the transport straight into llhttp, and a request costs one future and one
timer.

Every failure says whether the request may have reached the platform, which is what adapters classify on:
`NotSent` (nothing or only part of the request left this process: certainly not taken) or `AnswerLost`
(the whole request was handed to the kernel: the platform may have taken it).
"""

from __future__ import annotations

import asyncio
import re
import select
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

# A platform that does not complete the TCP handshake within this is treated as down: a refused or
# unanswered connect means nothing was sent, so failing fast costs nothing and speeds up failover.
MAX_CONNECT_TIMEOUT_S = 2.0
MAX_ANSWER_BYTES = 1_048_576  # of the head, and of the body

# What RFC 9110 allows in a request target, a header name and a header value: anything else (a CR or LF
# above all) would let one field end the request early or add one, so such a request is not sent.
_TARGET = re.compile(rb"[\x21-\x7e]+\Z")
_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+\Z")
_VALUE = re.compile(rb"[\x20-\x7e\x80-\xff\t]*\Z")


class TransportFailure(Exception):
    """The request got no HTTP answer."""


class NotSent(TransportFailure):
    """No connection, or the request was not handed over whole: the platform cannot have acted on it."""


class AnswerLost(TransportFailure):
    """The request was sent; its answer timed out, was cut off or was not HTTP."""


class _TooLarge(Exception):
    pass


class Wire(asyncio.Protocol):
    """One connection: writes a request, feeds what arrives to llhttp, resolves the exchange's future.

    Bytes that arrive while no request waits, or after the answer, are none the relay asked for: the
    connection is then not used again (`reusable`)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # set by connection_made
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._paused = False
        self._closed = False  # EOF or connection lost
        self._stray = False  # bytes nobody asked for
        self._keep_alive = False
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._head_bytes = 0
        self._headers_done = False
        self._framed = False  # a Content-Length or Transfer-Encoding: the end is not the connection's close
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._complete = False

    @property
    def reusable(self) -> bool:
        return self._keep_alive and not (self._closed or self._stray or self.transport.is_closing())

    async def exchange(self, data: bytes, *, timeout_s: float) -> tuple[int, bytes]:
        """Send one request and wait for its answer: its status and its whole body."""
        loop = asyncio.get_running_loop()
        self._reset()
        self._keep_alive = False
        waiter: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._waiter = waiter
        timer: asyncio.TimerHandle | None = None
        try:
            self._send(data)
            if self._paused:
                await self._drain(timeout_s)
            timer = loop.call_later(timeout_s, self._timed_out, waiter, timeout_s)
            return await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # retrieved: a failure that came while sending is reported as such

    def _send(self, data: bytes) -> None:
        self.transport.write(data)  # a send error closes the transport (connection_lost), never raises
        if self.transport.is_closing():
            # The first send failed (the connection was reset): the transport dropped the data.
            raise NotSent("connection failed while sending")

    async def _drain(self, timeout_s: float) -> None:
        # Only what reached the kernel can reach the platform; with bytes still buffered here the request
        # is incomplete there, and a server does not act on an incomplete request.
        self._drained = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._drained, timeout=timeout_s)
        except TimeoutError:
            raise NotSent(f"request not sent whole: no progress in {timeout_s} s") from None
        finally:
            self._drained = None
        if self._paused:  # lost with part of the request still here
            raise NotSent("request not sent whole: connection lost")

    @staticmethod
    def _timed_out(waiter: asyncio.Future[tuple[int, bytes]], timeout_s: float) -> None:
        if not waiter.done():
            waiter.set_exception(AnswerLost(f"no answer within {timeout_s} s"))

    def _fail(self, error: TransportFailure) -> None:
        self._keep_alive = False
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done() or self._complete:
            self._stray = True
            return
        if not self._headers_done:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_ANSWER_BYTES:
                self._fail(AnswerLost(f"answer head larger than {MAX_ANSWER_BYTES} bytes"))
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _TooLarge):
                self._fail(AnswerLost(f"answer larger than {MAX_ANSWER_BYTES} bytes"))
            elif self._complete:
                self._stray = True  # not HTTP after the answer: the answer stands, the connection does not
            else:
                self._fail(AnswerLost(f"answer is not HTTP: {exc}"))
        except httptools.HttpParserUpgrade:
            self._fail(AnswerLost("answer switches protocols"))

    def eof_received(self) -> bool:
        self._closed = True
        self._on_close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._on_close()
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _on_close(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._framed:  # HTTP/1.0 style: the close ends the body
            self._keep_alive = False
            waiter.set_result((self._status, b"".join(self._body)))
        elif self._headers_done:
            self._fail(AnswerLost("connection closed before the answer ended"))
        else:
            self._fail(AnswerLost("connection closed before the answer"))

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            self._stray = True

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or lowered == b"transfer-encoding":
            self._framed = True

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > MAX_ANSWER_BYTES:
            raise _TooLarge
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._complete:
            return
        if 100 <= self._status < 200:  # an interim answer (100 Continue): the final one follows
            self._reset()
            return
        self._complete = True
        self._keep_alive = self._parser.should_keep_alive()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, b"".join(self._body)))


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    path: str  # path and query of the configured URL

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(scheme=parts.scheme, host=parts.hostname, port=port, path=path)

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


class _Connection:
    def __init__(self, wire: Wire) -> None:
        self.wire = wire
        self._poller = select.poll()
        sock = wire.transport.get_extra_info("socket")
        self._fileno = sock.fileno() if sock is not None else -1
        if self._fileno >= 0:
            self._poller.register(self._fileno, select.POLLIN)

    @property
    def reusable(self) -> bool:
        # A kept-alive connection the server has closed meanwhile shows as EOF already received; reusing it
        # would turn a clean "not sent" into an ambiguous "answer lost". Bytes that arrived after the last
        # answer (some servers send a 408 before closing) would be read as the next request's answer.
        return self.wire.reusable and not self._socket_readable()

    def _socket_readable(self) -> bool:
        # An idle connection has nothing to read. Readable means a close, a reset or stray bytes the event
        # loop has not processed yet (it may not have run since they arrived): do not send on it.
        return self._fileno < 0 or bool(self._poller.poll(0))

    def abort(self) -> None:
        self.wire.transport.abort()


class Http1Client:
    """At most `size` requests at once, each on its own kept-alive connection to one origin.

    `address`: the IP address to connect to instead of resolving the origin's host (a callback goes to
    the address it checked); the host still names the origin in `Host` and in the TLS server name.
    """

    def __init__(
        self,
        *,
        url: str,
        timeout_s: float,
        size: int,
        address: str | None = None,
        connect_timeout_s: float = MAX_CONNECT_TIMEOUT_S,
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.origin = Origin.parse(url)
        self._address = address or self.origin.host
        self._timeout_s = timeout_s
        self._connect_timeout_s = min(timeout_s, connect_timeout_s)
        self._ssl = ssl.create_default_context() if self.origin.scheme == "https" else None
        self._host_line = b"Host: " + self.origin.host_header.encode("idna") + b"\r\n"
        # One slot per allowed request in flight; a slot keeps its connection between requests. LIFO so the
        # most recently used (warm) connections are reused first.
        self._slots: asyncio.LifoQueue[list[_Connection | None]] = asyncio.LifoQueue()
        self._all_slots: list[list[_Connection | None]] = [[None] for _ in range(size)]
        for slot in self._all_slots:
            self._slots.put_nowait(slot)

    @staticmethod
    def target_of(url: str) -> str:
        """The request target (path and query) of a configured URL."""
        return Origin.parse(url).path

    async def request(
        self, method: str, target: str, *, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> HttpAnswer:
        """Send one request and read its whole answer; raises `NotSent` or `AnswerLost`, nothing else."""
        data = self._encode(method, target, headers or (), body)
        slot = await self._slots.get()
        try:
            connection = slot[0]
            if connection is None or not connection.reusable:
                if connection is not None:
                    connection.abort()
                slot[0] = None
                connection = await self._connect()
                slot[0] = connection
            try:
                status, answer_body = await connection.wire.exchange(data, timeout_s=self._timeout_s)
            except BaseException:
                connection.abort()
                slot[0] = None
                raise
            if not connection.wire.reusable:  # the server asked to close, or sent more than the answer
                connection.abort()
                slot[0] = None
            return HttpAnswer(status=status, body=answer_body)
        finally:
            self._slots.put_nowait(slot)

    @property
    def busy(self) -> bool:
        """Whether a request is in flight or waiting for a slot."""
        return self._slots.qsize() < len(self._all_slots)

    async def aclose(self) -> None:
        for slot in self._all_slots:
            connection, slot[0] = slot[0], None
            if connection is not None:
                connection.abort()

    def _encode(self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes) -> bytes:
        try:
            head = [
                method.encode("ascii"),
                b" ",
                target.encode("ascii"),
                b" HTTP/1.1\r\n",
                self._host_line,
                b"Content-Length: %d\r\n" % len(body),
            ]
            if not _NAME.match(head[0]) or not _TARGET.match(head[2]):
                raise ValueError(f"not a method and request target: {method!r} {target!r}")
            for name, value in headers:
                raw_name, raw_value = name.encode("ascii"), value.encode("ascii")
                if not _NAME.match(raw_name) or not _VALUE.match(raw_value):
                    raise ValueError(f"not a header field: {name!r}")
                head += (raw_name, b": ", raw_value, b"\r\n")
        except (UnicodeEncodeError, ValueError) as exc:  # a header or target we cannot send: nothing left
            raise NotSent(f"cannot form the request: {exc}") from None
        head += (b"\r\n", body)
        return b"".join(head)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, wire = await asyncio.wait_for(
                loop.create_connection(
                    Wire,
                    self._address,
                    self.origin.port,
                    ssl=self._ssl,
                    server_hostname=self.origin.host if self._ssl else None,
                ),
                timeout=self._connect_timeout_s,
            )
        except TimeoutError:
            raise NotSent(f"connect timeout after {self._connect_timeout_s} s") from None
        except (OSError, ssl.SSLError) as exc:  # refused, unreachable, DNS failure, TLS handshake
            raise NotSent(f"connect failed: {exc!r}") from None
        return _Connection(wire)
