"""The adapters' HTTP/1.1 client against small scripted servers on 127.0.0.1: keep-alive, framing, and
whether each failure may have reached the server (`NotSent`) or not (`AnswerLost`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from shared.http1 import MAX_ANSWER_BYTES, AnswerLost, Http1Client, HttpAnswer, NotSent, Origin
from tests.helpers import free_port

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request with a Content-Length body (what the client sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.decode().split("\r\n"):
        if line.lower().startswith("content-length:"):
            length = int(line.split(":")[1])
    return head + await reader.readexactly(length)


@asynccontextmanager
async def server(script: Script) -> AsyncIterator[tuple[int, list[int]]]:
    """A server running `script` per connection; yields its port and a one-element connection counter."""
    connections = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        try:
            await script(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1], connections
    finally:
        srv.close()


def client(port: int, *, timeout_s: float = 1.0, size: int = 4) -> Http1Client:
    return Http1Client(url=f"http://127.0.0.1:{port}/send", timeout_s=timeout_s, size=size)


async def answer_forever(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        await read_request(reader)
        writer.write(OK)


async def test_keep_alive_reuses_one_connection() -> None:
    async with server(answer_forever) as (port, connections):
        http = client(port)
        for _ in range(5):
            answer = await http.request("POST", "/send", body=b"x" * 10)
            assert (answer.status, answer.body) == (200, b"ok")
        await http.aclose()
    assert connections[0] == 1


async def test_chunked_and_close_delimited_answers_are_read_whole() -> None:
    async def chunked_then_close_delimited(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        await read_request(reader)
        writer.write(b"HTTP/1.0 202 Accepted\r\n\r\n0: Accepted for delivery")
        await writer.drain()

    async with server(chunked_then_close_delimited) as (port, connections):
        http = client(port)
        assert (await http.request("GET", "/a")).body == b"abcde"
        second = await http.request("GET", "/b")
        assert (second.status, second.body) == (202, b"0: Accepted for delivery")
        await http.aclose()
    assert connections[0] == 1


async def test_connection_close_answer_opens_a_new_connection_next_time() -> None:
    async def close_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with server(close_each) as (port, connections):
        http = client(port, size=1)
        for _ in range(3):
            assert (await http.request("GET", "/")).status == 200
        await http.aclose()
    assert connections[0] == 3


async def test_refused_connect_is_not_sent_and_fast() -> None:
    http = client(free_port())
    started = time.monotonic()
    with pytest.raises(NotSent, match="connect failed"):
        await http.request("POST", "/send", body=b"{}")
    assert time.monotonic() - started < 0.5


async def test_silence_after_the_request_is_answer_lost_after_the_timeout() -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with server(never_answer) as (port, _):
        http = client(port, timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(AnswerLost, match="no answer within"):
            await http.request("POST", "/send", body=b"{}")
        assert 0.25 <= time.monotonic() - started < 2
        await http.aclose()


@pytest.mark.parametrize(
    "reply",
    [b"", b"HELLO\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"],
    ids=["closed-without-answer", "not-http", "cut-off-body"],
)
async def test_broken_answers_are_answer_lost(reply: bytes) -> None:
    async def misbehave(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()

    async with server(misbehave) as (port, _):
        http = client(port)
        with pytest.raises(AnswerLost):
            await http.request("POST", "/send", body=b"{}")
        await http.aclose()


async def test_request_that_cannot_be_handed_over_is_not_sent() -> None:
    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with server(never_read) as (port, _):
        http = client(port, timeout_s=0.3)
        with pytest.raises(NotSent, match="not sent whole"):
            await http.request("POST", "/send", body=b"x" * 32_000_000)
        await http.aclose()


async def test_idle_connection_closed_by_the_server_is_replaced_not_failed() -> None:
    async def one_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()  # then the handler returns and the server closes the idle connection

    async with server(one_then_close) as (port, connections):
        http = client(port, size=1)
        assert (await http.request("GET", "/")).status == 200
        await asyncio.sleep(0.1)  # the close arrives while idle
        assert (await http.request("GET", "/")).status == 200
        await http.aclose()
    assert connections[0] == 2


async def test_unsolicited_bytes_on_an_idle_connection_are_not_taken_as_the_next_answer() -> None:
    async def answer_then_408(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK + b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        await asyncio.sleep(5)

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    scripts = iter([answer_then_408, answer_once])

    async def next_script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await next(scripts)(reader, writer)

    async with server(next_script) as (port, _):
        http = client(port, size=1)
        assert (await http.request("GET", "/")).status == 200
        await asyncio.sleep(0.1)
        assert (await http.request("GET", "/")).status == 201
        await http.aclose()


async def test_requests_in_flight_never_exceed_the_size() -> None:
    in_flight = [0, 0]  # now, most

    async def slow_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
            await asyncio.sleep(0.02)
            in_flight[0] -= 1
            writer.write(OK)

    async with server(slow_answer) as (port, _):
        http = client(port, size=2)
        answers = await asyncio.gather(*(http.request("GET", "/") for _ in range(8)))
        await http.aclose()
    assert [a.status for a in answers] == [200] * 8
    assert in_flight[1] == 2


def test_origin_of_urls() -> None:
    origin = Origin.parse("http://127.0.0.1:13013/cgi-bin/sendsms")
    assert (origin.host, origin.port, origin.path, origin.host_header) == (
        "127.0.0.1",
        13013,
        "/cgi-bin/sendsms",
        "127.0.0.1:13013",
    )
    assert Origin.parse("https://sms.example.com/v1.0/message?x=1").path == "/v1.0/message?x=1"
    assert Origin.parse("https://sms.example.com").host_header == "sms.example.com"
    with pytest.raises(ValueError, match="not an http"):
        Origin.parse("ftp://example.com/")


async def test_interim_answers_are_skipped_and_stray_bytes_after_the_answer_retire_the_connection() -> None:
    async def continue_then_ok_then_garbage(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + OK + b"GARBAGE\r\n\r\n")
        await asyncio.sleep(5)

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    scripts = iter([continue_then_ok_then_garbage, answer_once])

    async def next_script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await next(scripts)(reader, writer)

    async with server(next_script) as (port, connections):
        http = client(port, size=1)
        assert await http.request("GET", "/") == HttpAnswer(status=200, body=b"ok")
        assert (await http.request("GET", "/")).status == 201
        await http.aclose()
    assert connections[0] == 2


@pytest.mark.parametrize(
    "head",
    [b"Content-Length: %d\r\n" % (MAX_ANSWER_BYTES + 1), b"X-Big: " + b"x" * MAX_ANSWER_BYTES + b"\r\n"],
)
async def test_answers_past_the_size_limit_are_answer_lost(head: bytes) -> None:
    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n")
        for _ in range(MAX_ANSWER_BYTES // 65_536 + 2):
            writer.write(b"y" * 65_536)
            await writer.drain()
        await asyncio.sleep(5)

    async with server(huge) as (port, _):
        http = client(port, timeout_s=5.0)
        with pytest.raises(AnswerLost, match="larger than"):
            await http.request("GET", "/")
        await http.aclose()


@pytest.mark.parametrize(
    ("target", "headers"),
    [("/a b", []), ("/a\r\nX: y", []), ("/", [("X-A", "b\r\nX-Injected: 1")]), ("/", [("X A", "b")])],
)
async def test_a_request_that_would_not_be_one_request_is_not_sent(
    target: str, headers: list[tuple[str, str]]
) -> None:
    async with server(answer_forever) as (port, connections):
        http = client(port)
        with pytest.raises(NotSent, match="cannot form the request"):
            await http.request("GET", target, headers=headers)
        await http.aclose()
    assert connections[0] == 0
