"""`relay status` against the real broker (queues, consumers, heartbeats) and a real SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aio_pika
import pytest

from shared.broker import ConfirmedPublisher
from shared.envelope import encode_heartbeat, encode_job
from shared.model import CircuitState, Heartbeat
from shared.settings import Settings
from shared.topology import (
    STANDBY_PRIORITY,
    declare,
    delay_queue,
    heartbeat_exchange,
    jobs_exchange,
    site_queue,
    topology_from,
)
from tests.helpers import RELAY, free_port
from tests.integration.ops_support import attempt_row, dead_row, insert, make_job, relay_env, run_relay

pytestmark = pytest.mark.integration

SITES_ENV = {
    "RELAY_SITES__A__URL": "http://127.0.0.1:9001/v1.0/message",
    "RELAY_SITES__B__URL": "http://127.0.0.1:9002/v1.0/message",
    "RELAY_SITES__C__URL": "http://127.0.0.1:9003/v1.0/message",
}


async def beat_forever(exchange: aio_pika.abc.AbstractExchange, *, period_s: float) -> None:
    """Two workers' heartbeats: a (closed, delivering 10 per beat) and b (open, delivering nothing).

    Transient and not mandatory, as workers send them: nobody may be listening.
    """
    delivered = 0
    started = time.time()
    while True:
        now = time.time()
        for beat in (
            Heartbeat(
                worker="host-a:1", host="host-a", pid=1, site="a", circuit=CircuitState.CLOSED,
                concurrency=64, in_flight=3, delivered_total=delivered, failed_over_total=0,
                metrics_port=0, started_at=started, at=now,
            ),
            Heartbeat(
                worker="host-b:2", host="host-b", pid=2, site="b", circuit=CircuitState.OPEN,
                concurrency=64, in_flight=0, delivered_total=5, failed_over_total=4,
                metrics_port=0, started_at=started, at=now,
            ),
        ):  # fmt: skip
            await exchange.publish(aio_pika.Message(encode_heartbeat(beat)), routing_key="")
        delivered += 10
        await asyncio.sleep(period_s)


async def ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    await message.ack()


async def test_status_reports_queues_workers_rates_and_dead_letters(
    broker_url: str, prefix: str, store_url: str, broker_cleanup: None
) -> None:
    env = {**relay_env(broker_url=broker_url, prefix=prefix, store_url=store_url), **SITES_ENV}
    settings = Settings(
        broker={"url": broker_url, "prefix": prefix},  # type: ignore[arg-type]
        sites={name: {"url": "http://127.0.0.1:9/x"} for name in "abc"},  # type: ignore[misc]
    )
    await insert(
        store_url,
        [
            dead_row(make_job(), reason="rejected"),
            dead_row(make_job(), reason="rejected"),
            dead_row(make_job(), site="b", reason="expired", dead_ago=timedelta(days=2)),
            *(
                attempt_row(make_job(), site="c", attempt=1, outcome="accepted", detail="ok", ago_s=5)
                for _ in range(30)
            ),
        ],
    )
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare(channel, topology_from(settings))
        publisher = ConfirmedPublisher(channel=channel, confirm_timeout_s=5)
        for _ in range(7):
            job = make_job()
            await publisher.publish(encode_job(job), exchange=jobs_exchange(prefix), routing_key="a")
        for _ in range(2):
            await publisher.publish(
                encode_job(make_job()), exchange="", routing_key=delay_queue(prefix, "b", 30)
            )
        standby = await connection.channel()
        await standby.set_qos(prefetch_count=1)
        queue_b = await standby.declare_queue(site_queue(prefix, "b"), passive=True)
        await queue_b.consume(ack, arguments={"x-priority": STANDBY_PRIORITY})

        beat_channel = await connection.channel()
        beat_exchange = await beat_channel.get_exchange(heartbeat_exchange(prefix))
        beats = asyncio.create_task(beat_forever(beat_exchange, period_s=0.2))
        try:
            proc = await asyncio.create_subprocess_exec(
                *RELAY, "status", "--json", env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)
            plain = await asyncio.create_subprocess_exec(
                *RELAY, "status", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            plain_out, plain_err = await asyncio.wait_for(plain.communicate(), timeout=60)
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats

    assert proc.returncode == 0, stderr.decode()
    snap = json.loads(stdout)
    assert (snap["broker"], snap["store"]) == ("ok", "ok")
    assert snap["ingress"]["spool_backlog"] == "unknown"
    sites = {s["name"]: s for s in snap["sites"]}
    assert sites["a"]["ready"] == 7
    assert sites["a"]["unacked"] == 3
    assert sites["a"]["circuit"] == "closed"
    assert sites["a"]["rate_source"] == "heartbeats"
    assert 20 <= sites["a"]["delivered_per_s"] <= 100  # 10 per 0.2 s beat, on a busy machine
    assert sites["b"]["consumers"] == 1
    assert sites["b"]["circuit"] == "open 1/1"
    assert sites["b"]["delay_queues"]["30s"] == 2
    assert sites["b"]["workers"][0]["failed_over_total"] == 4
    assert sites["c"]["circuit"] == "no workers"
    assert (sites["c"]["delivered_per_s"], sites["c"]["rate_source"]) == (0.5, "store")
    assert snap["dead_letters"] == {"total": 3, "by_reason": {"rejected": 2, "expired": 1}}

    assert plain.returncode == 0, plain_err.decode()
    text = plain_out.decode()
    assert "broker ok  store ok  ingress unreachable  spool backlog unknown" in text
    assert f"site a: queue {prefix}.site.a ready 7 unacked 3" in text
    assert "dead letters 3 (expired 1, rejected 2)" in text


class ReadyIngress(BaseHTTPRequestHandler):
    """An ingress's /readyz, enough for `relay status` to read a spool backlog from."""

    def do_GET(self) -> None:
        body = json.dumps({"ready": True, "broker": "ok", "store": "ok", "spool_backlog": 3}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ingress_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ReadyIngress)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_status_with_the_broker_down_prints_what_it_knows_and_exits_4(
    broker_url: str, prefix: str, store_url: str, ingress_port: int
) -> None:
    env = relay_env(broker_url=broker_url, prefix=prefix, store_url=store_url)
    env["RELAY_BROKER__URL"] = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    env["RELAY_INGRESS__PORT"] = str(ingress_port)
    env["RELAY_LOG__LEVEL"] = "INFO"  # the HTTP client logs each request at INFO: none of it may show
    result = run_relay(["status"], env=env)
    assert result.returncode == 4
    assert "broker down  store ok  ingress ready  spool backlog 3" in result.stdout
    assert result.stderr.startswith("relay: ") and len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_watch_started_with_sigint_ignored_stops_on_a_signal(
    broker_url: str, prefix: str, store_url: str, broker_cleanup: None, stop_signal: signal.Signals
) -> None:
    """As a background job of a shell script starts it: SIGINT ignored from the start."""
    env = relay_env(broker_url=broker_url, prefix=prefix, store_url=store_url)
    proc = await asyncio.create_subprocess_exec(
        *RELAY, "status", "--watch", "--json", "--interval", "0.3", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        first = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert json.loads(first)["broker"] == "ok"
        proc.send_signal(stop_signal)
        code = await asyncio.wait_for(proc.wait(), timeout=20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0
    assert await proc.stderr.read() == b""


async def test_watch_writes_one_snapshot_per_interval_until_interrupted(
    broker_url: str, prefix: str, store_url: str, broker_cleanup: None
) -> None:
    env = relay_env(broker_url=broker_url, prefix=prefix, store_url=store_url)
    proc = await asyncio.create_subprocess_exec(
        *RELAY, "status", "--watch", "--json", "--interval", "0.3", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        snapshots = []
        while len(snapshots) < 3:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            assert line, (await proc.stderr.read()).decode() if proc.stderr else "no output"
            if line.strip():
                snapshots.append(json.loads(line))
        assert proc.returncode is None  # still watching after three snapshots
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), timeout=15)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0
    assert all(s["broker"] == "ok" and s["prefix"] == prefix for s in snapshots)
    # Nothing was declared under this prefix, and status declares nothing: the depths are unknown...
    assert all(site["ready"] is None for s in snapshots for site in s["sites"])
    # ...and the broker still has no exchange of this prefix.
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
            await channel.get_exchange(heartbeat_exchange(prefix), ensure=True)
