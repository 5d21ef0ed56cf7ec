"""A 2xx means durable: the message sits persistent in its site's quorum queue, or in the spool, from
where it reaches the queue once the broker is back; a cut or a killed ingress loses nothing."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest

from ingress.metrics import SPOOLED
from shared.envelope import H_ATTEMPT, H_ORIGIN, H_SITE, H_SITE_ATTEMPT
from shared.topology import site_queue, topology_from
from tests.ingress_helpers import TcpProxy, api_for, drain, sms
from workers.policy import DeliveryState

pytestmark = pytest.mark.integration


def via_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{port}"))


async def wait_until(predicate, timeout_s: float = 15.0, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval_s)


async def test_accepted_messages_sit_persistent_in_their_sites_quorum_queue(
    broker_cleanup, settings_factory, store_url
):
    settings = settings_factory(routing={"weights": {"a": 1, "b": 1}})
    sent: dict[str, dict] = {}
    async with api_for(settings) as api:
        for n in range(20):
            request = sms(body=f"message {n}", reference=f"ref-{n}", validity_s=600)
            response = await api.submit(request)
            assert response.status_code == 202
            sent[response.json()["id"]] = request
    url, prefix = settings.broker.url, settings.broker.prefix
    got = {site: await drain(url, site_queue(prefix, site), expect=10, timeout_s=5) for site in ("a", "b")}

    assert {site: len(items) for site, items in got.items()} == {"a": 10, "b": 10}
    for site, items in got.items():
        for item in items:
            job = item.job
            request = sent.pop(job.id)
            assert item.message_id == item.carried_with[0] and item.persistent
            # A fresh job carries no delivery state: a worker of either site reads it as a first attempt
            # at the site of the queue it came from.
            assert not item.headers
            state = DeliveryState.from_headers(item.headers, queue_site=site)
            assert (state.attempt, state.site_attempt, state.site, state.origin) == (0, 0, site, site)
            assert (job.to, job.sender, job.body, job.reference) == (
                request["to"],
                request["from"],
                request["body"],
                request["reference"],
            )
            assert job.tenant == "bank-a"
            assert job.expires_at == pytest.approx(job.accepted_at + 600)
            assert abs(job.accepted_at - time.time()) < 60
    assert sent == {}

    # The queues are durable quorum queues: declaring them so again is accepted, anything else is not.
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        spec = next(q for q in topology_from(settings).queues() if q.name == site_queue(prefix, "a"))
        assert spec.arguments["x-queue-type"] == "quorum"
        await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await channel.declare_queue(site_queue(prefix, "a"), durable=True)


async def test_broker_cut_mid_stream_spools_and_forwards_every_message(
    broker_cleanup, settings_factory, store_url, broker_url
):
    proxy = TcpProxy(target_port=urlsplit(broker_url).port or 5672)
    await proxy.start()
    settings = settings_factory(
        broker={"url": via_port(broker_url, proxy.port), "confirm_timeout_s": 0.5},
        routing={"policy": "primary", "primary": "a"},
    )
    spooled_before = SPOOLED._value.get()
    accepted: list[str] = []
    total, clients = 300, 6
    try:
        async with api_for(settings) as api:
            counter = iter(range(total))

            async def client() -> None:
                for n in counter:
                    if n == 100:
                        await proxy.cut()
                    if n == 200:
                        await proxy.restore()
                    response = await api.submit(sms(body=f"m{n}"))
                    assert response.status_code == 202, response.text
                    accepted.append(response.json()["id"])

            await asyncio.gather(*(client() for _ in range(clients)))
            assert SPOOLED._value.get() > spooled_before, "the cut should have sent messages to the spool"
            await wait_until(lambda: api.ingress.spool_backlog == 0 and api.ingress.link.available, 30)
    finally:
        await proxy.close()

    got = await drain(broker_url, site_queue(settings.broker.prefix, "a"), expect=total, timeout_s=10)
    ids = [item.job.id for item in got]
    assert len(accepted) == total
    assert set(ids) == set(accepted), f"missing {len(set(accepted) - set(ids))}"
    duplicates = {i for i in ids if ids.count(i) > 1}
    # A confirm lost in the cut may bring a second copy, always with the same id.
    assert all(item.message_id == item.carried_with[0] for item in got)
    assert len(ids) - len(set(ids)) == sum(ids.count(i) - 1 for i in duplicates)
    print(f"accepted {total}, queued {len(ids)}, duplicates by id: {sorted(duplicates)}")


async def test_broker_down_at_start_still_accepts_and_forwards_later(
    broker_cleanup, settings_factory, store_url, broker_url
):
    proxy = TcpProxy(target_port=urlsplit(broker_url).port or 5672)
    await proxy.start()
    port = proxy.port
    await proxy.cut()
    settings = settings_factory(
        broker={"url": via_port(broker_url, port), "confirm_timeout_s": 0.5, "connect_timeout_s": 1},
        routing={"policy": "primary", "primary": "a"},
    )
    import httpx

    from ingress.app import create_app
    from ingress.service import running
    from shared.store.api_keys import create_key

    try:
        async with running(settings) as ingress:
            key, _ = await create_key(ingress.sessions, tenant="bank-a")
            app = create_app(settings, ingress=ingress)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://r"
            ) as client:
                ready = await client.get("/readyz")
                assert ready.status_code == 503
                assert ready.json()["broker"] == "down"
                ids = []
                for n in range(30):
                    response = await client.post(
                        "/v1/messages", json=sms(body=f"m{n}"), headers={"Authorization": f"Bearer {key}"}
                    )
                    assert response.status_code == 202
                    ids.append(response.json()["id"])
                assert (await client.get("/readyz")).json()["spool_backlog"] == 30
                await proxy.restore()
                await wait_until(lambda: ingress.spool_backlog == 0 and ingress.link.available, 30)
                assert (await client.get("/readyz")).json() == {
                    "ready": True,
                    "broker": "ok",
                    "store": "ok",
                    "spool_backlog": 0,
                }
    finally:
        await proxy.close()
    got = await drain(broker_url, site_queue(settings.broker.prefix, "a"), expect=30, timeout_s=5)
    # Forwarded in order of arrival.
    assert [item.job.id for item in got] == ids


async def test_an_orphaned_spool_file_is_drained_in_order(
    broker_cleanup, settings_factory, store_url, broker_url
):
    from ingress.spool import Spool, SpoolEntry, spool_file
    from shared.envelope import encode_job
    from shared.model import Job

    settings = settings_factory(routing={"policy": "primary", "primary": "a"})
    headers = {H_ATTEMPT: 0, H_SITE_ATTEMPT: 0, H_SITE: "a", H_ORIGIN: "a"}
    jobs = [Job(id=f"{n:032x}", tenant="t", to="+31612345678", sender="S", body=f"m{n}") for n in range(5)]
    # A spool file left by a process that died: nobody holds its lock.
    orphan = await Spool(path=spool_file(settings.ingress.spool_path, 3)).open()
    await orphan.append(
        [SpoolEntry(message_id=j.id, routing_key="a", headers=headers, body=encode_job(j)) for j in jobs]
    )
    await orphan.close()
    async with api_for(settings) as api:
        await wait_until(lambda: api.ingress.forwarder.orphans_drained == 5, 15)
    got = await drain(broker_url, site_queue(settings.broker.prefix, "a"), expect=5, timeout_s=5)
    assert [item.job.id for item in got] == [j.id for j in jobs]
    reopened = await Spool(path=spool_file(settings.ingress.spool_path, 3)).open()
    assert reopened.backlog == 0
    await reopened.close()


async def test_a_peer_replicas_spool_is_drained_once_no_live_process_holds_it(
    broker_cleanup, settings_factory, store_url, broker_url, tmp_path
):
    """Replicas with spool files of their own elsewhere (`ingress.peer_spool_paths`): the survivor drains
    the dead one's file, and leaves it alone while its owner lives."""
    from ingress.spool import Spool, SpoolEntry, SpoolLock, spool_file
    from shared.envelope import encode_job
    from shared.model import Job

    peer = tmp_path / "replica-b" / "spool.db"
    peer.parent.mkdir()
    settings = settings_factory(
        routing={"policy": "primary", "primary": "a"}, ingress={"peer_spool_paths": [str(peer)]}
    )
    headers = {H_ATTEMPT: 0, H_SITE_ATTEMPT: 0, H_SITE: "a", H_ORIGIN: "a"}
    jobs = [Job(id=f"{n:032x}", tenant="t", to="+31612345678", sender="S", body=f"m{n}") for n in range(6)]
    # The peer ran two processes: its own file and a sibling, both left behind.
    for path, part in ((peer, jobs[:3]), (spool_file(peer, 1), jobs[3:])):
        left = await Spool(path=path).open()
        await left.append(
            [SpoolEntry(message_id=j.id, routing_key="a", headers=headers, body=encode_job(j)) for j in part]
        )
        await left.close()
    owner = SpoolLock.try_acquire(peer)  # the peer is alive at first
    assert owner is not None
    async with api_for(settings) as api:
        await wait_until(lambda: api.ingress.forwarder.orphans_drained == 3, 15)
        await asyncio.sleep(1.0)
        assert api.ingress.forwarder.orphans_drained == 3, "a file whose owner lives was drained"
        owner.release()  # the peer dies
        await wait_until(lambda: api.ingress.forwarder.orphans_drained == 6, 15)
    got = await drain(broker_url, site_queue(settings.broker.prefix, "a"), expect=6, timeout_s=5)
    assert sorted(item.job.id for item in got) == sorted(j.id for j in jobs)
    first = [j.id for j in jobs[:3]]
    assert [item.job.id for item in got if item.job.id in first] == first  # one file, in order of arrival


def _rabbitmqctl(*args: str) -> None:
    subprocess.run([shutil.which("rabbitmqctl") or "rabbitmqctl", "-q", *args], check=True, timeout=120)


async def test_broker_restart_mid_stream_loses_no_accepted_message(
    broker_cleanup, settings_factory, store_url, broker_url
):
    """The local RabbitMQ application is stopped and started again while clients keep submitting: every
    accepted message ends up in its quorum queue, a second copy only ever under the same id."""
    if shutil.which("rabbitmqctl") is None or urlsplit(broker_url).hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("restarting the broker needs rabbitmqctl and the broker on this machine")
    settings = settings_factory(
        broker={"confirm_timeout_s": 0.5}, routing={"policy": "primary", "primary": "a"}
    )
    spooled_before = SPOOLED._value.get()
    accepted: list[str] = []
    total, clients, pause_s = 300, 6, 0.15  # about 40 submits a second for 7-8 s
    restart: asyncio.Task[None] | None = None

    async def restart_broker() -> None:
        await asyncio.to_thread(_rabbitmqctl, "stop_app")
        await asyncio.sleep(1.0)
        await asyncio.to_thread(_rabbitmqctl, "start_app")
        await asyncio.to_thread(_rabbitmqctl, "await_startup")

    try:
        async with api_for(settings) as api:
            counter = iter(range(total))

            async def client() -> None:
                nonlocal restart
                for n in counter:
                    if n == 60:
                        restart = asyncio.create_task(restart_broker())
                    response = await api.submit(sms(body=f"m{n}"))
                    assert response.status_code == 202, response.text
                    accepted.append(response.json()["id"])
                    await asyncio.sleep(pause_s)

            await asyncio.gather(*(client() for _ in range(clients)))
            assert restart is not None
            await restart
            assert SPOOLED._value.get() > spooled_before, "the restart should have sent messages to the spool"
            await wait_until(lambda: api.ingress.spool_backlog == 0 and api.ingress.link.available, 60)
    finally:
        if restart is not None and not restart.done():
            await restart
        await asyncio.to_thread(_rabbitmqctl, "start_app")  # whatever happened, leave the broker running
        await asyncio.to_thread(_rabbitmqctl, "await_startup")

    got = await drain(broker_url, site_queue(settings.broker.prefix, "a"), expect=total, timeout_s=20)
    ids = [item.job.id for item in got]
    assert len(accepted) == total
    assert set(ids) == set(accepted), f"missing {len(set(accepted) - set(ids))}"
    assert all(item.message_id == item.carried_with[0] for item in got)
    print(f"accepted {total}, queued {len(ids)}, duplicates by id: {len(ids) - len(set(ids))}")
