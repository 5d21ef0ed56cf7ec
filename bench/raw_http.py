"""A lean HTTP/1.1 keep-alive client for the benchmarks, on 127.0.0.1 only.

httpx spent about 4 ms of CPU per request here (more than the servers it measured), so on a shared
2-core machine a benchmark driven by it would have measured itself. Bodies are read by Content-Length;
the servers measured (the relay, Kannel's smsbox) answer that way, with a head shorter than the
reader's limit (64 KiB).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import orjson


class RawConnection:
    """One keep-alive HTTP/1.1 connection, with no more client work than the protocol needs."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        self._reader = reader
        self._writer = writer
        self._head = head

    @classmethod
    async def open(cls, port: int, key: str | None) -> RawConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        auth = f"Authorization: Bearer {key}\r\n" if key else ""
        head = (
            f"Host: 127.0.0.1:{port}\r\n{auth}Content-Type: application/json\r\nConnection: keep-alive\r\n"
        ).encode()
        return cls(reader, writer, head)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        return await self.request(b"POST", path, body)

    async def get(self, path_and_query: str) -> tuple[int, bytes]:
        return await self.request(b"GET", path_and_query, b"")

    async def request(self, method: bytes, path: str, body: bytes) -> tuple[int, bytes]:
        self._writer.write(
            b"%s %s HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n%s"
            % (method, path.encode(), self._head, len(body), body)
        )
        # The whole head in one read and one search: a response's every header line costs the client
        # nothing, so an answer with more fields does not slow the client that shares the CPU.
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        start = head.lower().find(b"\ncontent-length:")
        length = 0 if start < 0 else int(head[start + 16 : head.index(b"\r", start)])
        return status, await self._reader.readexactly(length)

    def close(self) -> None:
        self._writer.close()


class RawPool:
    def __init__(self, *, port: int, key: str | None, size: int) -> None:
        self._port = port
        self._key = key
        self._size = size
        self._idle: asyncio.Queue[RawConnection] = asyncio.Queue()
        self._all: list[RawConnection] = []

    async def __aenter__(self) -> RawPool:
        for _ in range(self._size):
            connection = await RawConnection.open(self._port, self._key)
            self._all.append(connection)
            self._idle.put_nowait(connection)
        return self

    async def __aexit__(self, *_: object) -> None:
        for connection in self._all:
            connection.close()

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        return await self.request(b"POST", path, body)

    async def get(self, path_and_query: str) -> tuple[int, bytes]:
        return await self.request(b"GET", path_and_query, b"")

    async def request(self, method: bytes, path: str, body: bytes) -> tuple[int, bytes]:
        connection = await self._idle.get()
        try:
            return await connection.request(method, path, body)
        finally:
            self._idle.put_nowait(connection)


@contextlib.asynccontextmanager
async def receipt_counter(admin_ports: Iterable[int]) -> AsyncIterator[Callable[[], Awaitable[int]]]:
    """A counter of the unique messages simulated platforms received, asked over one keep-alive connection
    to each admin port: polled through httpx, the polling took CPU from what was being measured."""
    async with contextlib.AsyncExitStack() as stack:
        pools = [
            await stack.enter_async_context(RawPool(port=port, key=None, size=1)) for port in admin_ports
        ]

        async def count() -> int:
            total = 0
            for pool in pools:
                _, body = await pool.get("/stats")
                total += int(orjson.loads(body)["unique"])
            return total

        yield count


@dataclass(frozen=True, slots=True)
class Flow:
    accepted: int | None  # requests the relay accepted; None when the sending outlasted the deadline
    received: int  # messages the platforms took by the end
    elapsed_s: float  # from the first request to the last receipt counted (or the deadline)


async def send_until_received(
    sends: Iterable[Coroutine[Any, Any, int]],
    received: Callable[[], Awaitable[int]],
    *,
    deadline_s: float,
    poll_s: float,
) -> Flow:
    """Run `sends` (each returns how many messages it got accepted) at once and poll `received` until the
    platforms took every accepted message or `deadline_s` passed."""
    began = time.perf_counter()
    sending = asyncio.ensure_future(asyncio.gather(*sends))
    count = 0
    while time.perf_counter() - began < deadline_s:
        count = await received()
        if sending.done() and count >= sum(sending.result()):
            break
        await asyncio.sleep(poll_s)
    elapsed_s = time.perf_counter() - began
    accepted = sum(await sending) if sending.done() else None
    if not sending.done():
        sending.cancel()
    return Flow(accepted=accepted, received=count, elapsed_s=elapsed_s)
