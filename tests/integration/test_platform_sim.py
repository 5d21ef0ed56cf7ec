"""The simulated platform as a real process: HTTP/1.1 handling, admin API, the `relay` command."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from simulator.http11 import HttpServer, Request, Response
from tests.helpers import RELAY
from tests.platform_sim_harness import RunningSim, running_sim

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def module_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSim]:
    with running_sim(log=tmp_path_factory.mktemp("sim") / "sim.log") as sim:
        yield sim


@pytest.fixture
def sim(module_sim: RunningSim) -> RunningSim:
    module_sim.reset()
    return module_sim


def submit_body(*references: str) -> bytes:
    return orjson.dumps(
        {
            "messages": {
                "authentication": {"producttoken": "tok"},
                "msg": [
                    {
                        "from": "Bank",
                        "to": [{"number": "+31612345678"}],
                        "body": {"content": "hi"},
                        "reference": r,
                    }
                    for r in references
                ],
            }
        }
    )


def raw_request(body: bytes, *, connection: str = "keep-alive") -> bytes:
    head = (
        "POST /v1.0/message HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n"
    )
    return head.encode() + body


def read_responses(sock: socket.socket, count: int, *, timeout_s: float = 5.0) -> list[tuple[int, bytes]]:
    sock.settimeout(timeout_s)
    buffer = b""
    responses: list[tuple[int, bytes]] = []
    while len(responses) < count:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = buffer[:end].decode()
            length = int(
                next(h for h in head.split("\r\n") if h.lower().startswith("content-length")).split(":")[1]
            )
            if len(buffer) >= end + 4 + length:
                responses.append((int(head.split(" ")[1]), buffer[end + 4 : end + 4 + length]))
                buffer = buffer[end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            break
        buffer += chunk
    return responses


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"messages": {"msg": []}}',
        b'{"messages": {"authentication": {"producttoken": "t"}, "msg": []}}',
        b'{"messages": {"authentication": {"producttoken": "t"}, "msg": [{"from": "x"}]}}',
        orjson.dumps(
            {
                "messages": {
                    "authentication": {"producttoken": "t"},
                    "msg": [
                        {
                            "from": "B",
                            "to": [{"number": "+31612345678"}],
                            "body": {"content": "x"},
                            "reference": "r",
                        }
                    ]
                    * 101,
                }
            }
        ),
    ],
)
def test_malformed_body_is_400_and_nothing_counted(sim: RunningSim, body: bytes) -> None:
    response = httpx.post(sim.url, content=body, timeout=5)
    assert response.status_code == 400
    assert response.json()["errorCode"] != 0
    assert sim.stats()["received"] == 0


def test_pipelined_requests_are_answered_in_order_on_one_connection(sim: RunningSim) -> None:
    with socket.create_connection(("127.0.0.1", sim.port)) as sock:
        sock.sendall(b"".join(raw_request(submit_body(f"p{n}")) for n in range(20)))
        responses = read_responses(sock, 20)
    assert [status for status, _ in responses] == [200] * 20
    assert [orjson.loads(body)["messages"][0]["reference"] for _, body in responses] == [
        f"p{n}" for n in range(20)
    ]
    assert sim.references() == [f"p{n}" for n in range(20)]


def test_request_split_across_writes_is_reassembled(sim: RunningSim) -> None:
    data = raw_request(submit_body("split"))
    with socket.create_connection(("127.0.0.1", sim.port)) as sock:
        for offset in range(0, len(data), 7):
            sock.sendall(data[offset : offset + 7])
            time.sleep(0.001)
        ((status, _),) = read_responses(sock, 1)
    assert status == 200
    assert sim.references() == ["split"]


def test_connection_close_is_honoured(sim: RunningSim) -> None:
    with socket.create_connection(("127.0.0.1", sim.port)) as sock:
        sock.sendall(raw_request(submit_body("c1"), connection="close"))
        assert [s for s, _ in read_responses(sock, 1)] == [200]
        sock.settimeout(2)
        assert sock.recv(10) == b""  # closed by the server


def test_chunked_body_is_refused_clearly(sim: RunningSim) -> None:
    with socket.create_connection(("127.0.0.1", sim.port)) as sock:
        sock.sendall(b"POST /v1.0/message HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        ((status, body),) = read_responses(sock, 1)
    assert status == 411
    assert b"Content-Length" in body


def test_wrong_path_and_method(sim: RunningSim) -> None:
    assert httpx.post(sim.url.replace("/v1.0/message", "/nope"), content=b"{}", timeout=5).status_code == 404
    assert httpx.get(sim.url, timeout=5).status_code == 405


def test_admin_faults_roundtrip_and_validation(sim: RunningSim) -> None:
    assert sim.admin("GET", "/faults")["mode"] == "none"
    assert sim.set_fault("slow", latency_ms=250) == {"mode": "slow", "latency_ms": 250, "share": 1.0}
    assert sim.admin("GET", "/faults")["latency_ms"] == 250
    for bad in ({"mode": "melt"}, {"mode": "reject", "share": 2}, {"mode": "slow", "latency_ms": -1}, [1]):
        response = httpx.post(sim.admin_url + "/faults", json=bad, timeout=5)
        assert response.status_code == 400, bad
        assert response.json()["error"]
    assert sim.admin("GET", "/faults")["mode"] == "slow"  # a refused change leaves the fault as it was
    assert httpx.get(sim.admin_url + "/nope", timeout=5).status_code == 404


def test_reset_clears_counters(sim: RunningSim) -> None:
    httpx.post(sim.url, content=submit_body("a", "b", "a"), timeout=5).raise_for_status()
    stats = sim.stats()
    assert (stats["received"], stats["unique"], stats["duplicates"]) == (3, 2, 1)
    assert sim.references() == ["a", "b"]
    httpx.post(sim.url, content=submit_body("c", "b"), timeout=5).raise_for_status()
    assert sim.admin("GET", "/references?since=2") == {"references": ["c"], "total": 3}
    assert sim.admin("GET", "/references?since=9") == {"references": [], "total": 3}
    assert httpx.get(sim.admin_url + "/references?since=-1", timeout=5).status_code == 400
    sim.admin("POST", "/reset")
    assert sim.stats() == {"received": 0, "unique": 0, "duplicates": 0, "accepted": 0, "rejected": 0}
    assert sim.references() == []


def test_relay_platform_sim_command_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "relay-sim.log"
    with running_sim(log=log, command=[*RELAY, "platform-sim"]) as sim:
        response = httpx.post(sim.url, content=submit_body("cmd"), timeout=5)
        assert response.json()["messages"][0]["status"] == "Accepted"
        assert sim.stats()["received"] == 1
    assert sim.process.returncode == 0  # the harness sent SIGTERM: a clean stop exits 0
    assert "Traceback" not in log.read_text()


async def test_a_failing_handler_answers_500_and_closes() -> None:
    async def broken(request: Request) -> Response:
        raise RuntimeError("bug")

    server = HttpServer(host="127.0.0.1", port=0, handler=broken)
    await server.start()
    try:
        async with httpx.AsyncClient() as client:
            response = await client.post(f"http://127.0.0.1:{server.port}/v1.0/message", content=b"{}")
        assert response.status_code == 500
        assert (
            "messages" not in response.json()
        )  # nothing claimed either way: the client must call it ambiguous
        assert response.headers["connection"] == "close"
    finally:
        await server.stop()
