"""A lean HTTP/1.1 client (platform adapters, callbacks, the simulator's reports): asyncio streams, h11
for the protocol, keep-alive.

Why not httpx: measured against the simulator on the 2-core test machine, httpx.AsyncClient spent about
1.5-2 ms of CPU per request (its pool bookkeeping alone grows with the number of connections), while h11 on
asyncio streams spent about 0.3 ms. For one-message-per-request platforms (Kannel, Jasmin) the adapter is
the worker's largest cost, so this is the difference between a worker that keeps up with its platform and
one that does not.

Every failure says whether the request may have reached the platform, which is what adapters classify on:
`NotSent` (nothing or only part of the request left this process: certainly not taken) or `AnswerLost`
(the whole request was handed to the kernel: the platform may have taken it).
"""

from __future__ import annotations

import asyncio
import contextlib
import select
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

# A platform that does not complete the TCP handshake within this is treated as down: a refused or
# unanswered connect means nothing was sent, so failing fast costs nothing and speeds up failover.
MAX_CONNECT_TIMEOUT_S = 2.0
MAX_ANSWER_BYTES = 1_048_576
_READ_CHUNK_BYTES = 65_536


class TransportFailure(Exception):
    """The request got no HTTP answer."""


class NotSent(TransportFailure):
    """No connection, or the request was not handed over whole: the platform cannot have acted on it."""


class AnswerLost(TransportFailure):
    """The request was sent; its answer timed out, was cut off or was not HTTP."""


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
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=MAX_ANSWER_BYTES)

    @property
    def reusable(self) -> bool:
        # A kept-alive connection the server has closed meanwhile shows as EOF already received; reusing it
        # would turn a clean "not sent" into an ambiguous "answer lost".
        # Bytes that arrived after the last answer (some servers send a 408 before closing) would be read as
        # the next request's answer. They sit in h11's buffer when they came with that answer, else in the
        # reader's buffer, where asyncio moves them at once.
        unsolicited = bool(self.protocol.trailing_data[0]) or len(getattr(self.reader, "_buffer", b"")) > 0
        return (
            self.protocol.our_state is h11.IDLE
            and self.protocol.their_state is h11.IDLE
            and not unsolicited
            and not self.reader.at_eof()
            and not self.writer.transport.is_closing()
            and not self._socket_readable()
        )

    def _socket_readable(self) -> bool:
        # An idle connection has nothing to read. Readable means a close, a reset or stray bytes the event
        # loop has not processed yet (it may not have run since they arrived): do not send on it.
        sock = self.writer.get_extra_info("socket")
        if sock is None:
            return True
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def abort(self) -> None:
        self.writer.transport.abort()


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
                answer = await self._exchange(connection, method, target, headers or [], body)
            except BaseException:
                connection.abort()
                slot[0] = None
                raise
            if connection.protocol.our_state is h11.DONE and connection.protocol.their_state is h11.DONE:
                connection.protocol.start_next_cycle()
            else:  # the server asked to close, or the exchange did not end cleanly
                connection.abort()
                slot[0] = None
            return answer
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

    async def _connect(self) -> _Connection:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self._address,
                    self.origin.port,
                    ssl=self._ssl,
                    server_hostname=self.origin.host if self._ssl else None,
                    limit=MAX_ANSWER_BYTES,
                ),
                timeout=self._connect_timeout_s,
            )
        except TimeoutError:
            raise NotSent(f"connect timeout after {self._connect_timeout_s} s") from None
        except (OSError, ssl.SSLError) as exc:  # refused, unreachable, DNS failure, TLS handshake
            raise NotSent(f"connect failed: {exc!r}") from None
        return _Connection(reader, writer)

    async def _exchange(
        self, connection: _Connection, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> HttpAnswer:
        all_headers = [("Host", self.origin.host_header), ("Content-Length", str(len(body))), *headers]
        try:
            data = (
                connection.protocol.send(h11.Request(method=method, target=target, headers=all_headers))
                or b""
            )
            if body:
                data += connection.protocol.send(h11.Data(data=body)) or b""
            data += connection.protocol.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:  # a header or target we cannot send: nothing left
            raise NotSent(f"cannot form the request: {exc}") from None
        await self._send(connection, data)
        return await self._receive(connection)

    async def _send(self, connection: _Connection, data: bytes) -> None:
        transport = connection.writer.transport
        try:
            connection.writer.write(data)
            if transport.is_closing():
                # The first send failed (the connection was reset): asyncio dropped the data.
                raise NotSent("connection failed while sending")
            if transport.get_write_buffer_size() == 0:
                return  # all handed to the kernel
            await asyncio.wait_for(connection.writer.drain(), timeout=self._timeout_s)
        except (OSError, TimeoutError) as exc:
            # Only what reached the kernel can reach the platform; with bytes still buffered here the
            # request is incomplete there, and a server does not act on an incomplete request.
            if transport.get_write_buffer_size() > 0 or isinstance(exc, TimeoutError):
                raise NotSent(f"request not sent whole: {exc!r}") from None
            raise AnswerLost(f"connection lost after sending: {exc!r}") from None

    async def _receive(self, connection: _Connection) -> HttpAnswer:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        status: int | None = None
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                event = connection.protocol.next_event()
            except h11.RemoteProtocolError as exc:
                raise AnswerLost(f"answer is not HTTP: {exc}") from None
            if event is h11.NEED_DATA:
                remaining_s = deadline - loop.time()
                if remaining_s <= 0:
                    raise AnswerLost(f"no answer within {self._timeout_s} s")
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for made a task for every read.
                    async with asyncio.timeout(remaining_s):
                        chunk = await connection.reader.read(_READ_CHUNK_BYTES)
                except TimeoutError:
                    raise AnswerLost(f"no answer within {self._timeout_s} s") from None
                except OSError as exc:
                    raise AnswerLost(f"connection lost before the answer: {exc!r}") from None
                with contextlib.suppress(h11.RemoteProtocolError):
                    connection.protocol.receive_data(chunk)  # b"" marks EOF; next_event() reports a cut-off
                if not chunk and status is None and connection.protocol.their_state is h11.SEND_RESPONSE:
                    raise AnswerLost("connection closed before the answer")
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_ANSWER_BYTES:
                    raise AnswerLost(f"answer larger than {MAX_ANSWER_BYTES} bytes")
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                if status is None:  # pragma: no cover - h11 never ends a message without a response
                    raise AnswerLost("answer without a status")
                return HttpAnswer(status=status, body=b"".join(chunks))
            elif isinstance(event, h11.ConnectionClosed):
                raise AnswerLost("connection closed before the answer ended")
            # h11.InformationalResponse (1xx): keep reading for the final answer
