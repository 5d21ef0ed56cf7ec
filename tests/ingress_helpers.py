"""Helpers of the ingress tests: a running ingress behind an httpx client, queue inspection, and a
TCP proxy that can cut the ingress off from the broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx

from ingress.app import create_app
from ingress.service import Ingress, running
from shared.envelope import decode_jobs
from shared.model import Job
from shared.settings import Settings
from shared.store.api_keys import create_key


@dataclass
class Api:
    client: httpx.AsyncClient
    ingress: Ingress
    settings: Settings
    key: str  # tenant "bank-a"
    other_key: str  # tenant "bank-b"

    def auth(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    async def submit(self, body: dict[str, Any], **headers: str) -> httpx.Response:
        return await self.client.post("/v1/messages", json=body, headers={**self.auth(), **headers})


@contextlib.asynccontextmanager
async def api_for(settings: Settings) -> AsyncIterator[Api]:
    async with running(settings) as ingress:
        await asyncio.wait_for(ingress.link.ready.wait(), 10)
        key, _ = await create_key(ingress.sessions, tenant="bank-a")
        other, _ = await create_key(ingress.sessions, tenant="bank-b")
        app = create_app(settings, ingress=ingress)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://relay") as client:
            yield Api(client=client, ingress=ingress, settings=settings, key=key, other_key=other)


def sms(**overrides: Any) -> dict[str, Any]:
    return {"to": "+31612345678", "from": "MyBank", "body": "Your code is 123456", **overrides}


async def queue_depth(broker_url: str, name: str) -> int:
    """Messages in queue `name` (a bundle of jobs counts once)."""
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)


async def queued_jobs(broker_url: str, name: str) -> int:
    """Jobs in site queue `name`, alone or bundled; the messages are left where they are."""
    count = 0
    connection = await aio_pika.connect(broker_url)
    async with connection:  # closing it puts back every message taken
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        while (message := await queue.get(no_ack=False, fail=False)) is not None:
            count += len(decode_jobs(message.body))
    return count


@dataclass(frozen=True)
class Queued:
    """One job found in a queue, with the message that carried it (alone or in a bundle)."""

    job: Job
    carried_with: list[str]  # the ids of every job of its message, in order
    message_id: str | None
    headers: dict[str, Any]
    persistent: bool


def _queued(message: aio_pika.abc.AbstractIncomingMessage) -> list[Queued]:
    jobs = decode_jobs(message.body)
    ids = [job.id for job in jobs]
    return [
        Queued(
            job=job,
            carried_with=ids,
            message_id=message.message_id,
            headers=dict(message.headers or {}),
            persistent=message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT,
        )
        for job in jobs
    ]


async def drain(broker_url: str, name: str, *, expect: int, timeout_s: float = 10.0) -> list[Queued]:
    """Consume (and ack) messages until they carried `expect` jobs, or what is there when `timeout_s` ran
    out; one entry per job."""
    got: list[Queued] = []
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=500)
        queue = await channel.declare_queue(name, passive=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s), queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    got.extend(_queued(message))
                    if len(got) >= expect:
                        break
        # Anything beyond `expect` is a duplicate or a stray: take it too, briefly.
        while True:
            extra = await queue.get(no_ack=True, fail=False, timeout=2)
            if extra is None:
                break
            got.extend(_queued(extra))
    return got


class TcpProxy:
    """A local TCP proxy to the broker; `cut()` drops every connection and refuses new ones, and
    `reply_delay_s` holds back every byte from the broker to the client that long (in order)."""

    def __init__(self, *, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.reply_delay_s = 0.0

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port or self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def restore(self) -> None:
        await self.start(self.port)

    async def close(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, up_writer})
        self._spawn(self._pipe(reader, up_writer))
        self._spawn(self._delayed_pipe(up_reader, writer))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)

    async def _delayed_pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        """Each chunk is written `reply_delay_s` (as it was when the chunk came) after it was read."""
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            try:
                while (chunk := await chunks.get())[1]:
                    await asyncio.sleep(chunk[0] - loop.time())
                    dst.write(chunk[1])
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.transport.abort()
                self._writers.discard(dst)

        self._spawn(deliver())
        try:
            while data := await src.read(65536):
                chunks.put_nowait((loop.time() + self.reply_delay_s, data))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            chunks.put_nowait((loop.time() + self.reply_delay_s, b""))
