"""Late confirms make no unmarked second copies. The broker's replies are held back for twice the
confirm timeout while clients submit: every accepted message sits in its site queue once without the
possible-duplicate header, and any other copy of it carries that header."""

from __future__ import annotations

import asyncio
from collections import Counter
from urllib.parse import urlsplit

import pytest

from ingress.metrics import SPOOLED
from shared.envelope import H_POSSIBLE_DUPLICATE
from shared.settings import Settings
from shared.topology import site_queue
from tests.ingress_helpers import Api, Queued, TcpProxy, api_for, drain, sms
from tests.integration.test_ingress_durability import via_port, wait_until

pytestmark = pytest.mark.integration

CONFIRM_TIMEOUT_S = 0.5


@pytest.fixture
async def proxy(broker_url: str):  # type: ignore[no-untyped-def]
    proxy = TcpProxy(target_port=urlsplit(broker_url).port or 5672)
    await proxy.start()
    yield proxy
    await proxy.close()


def settings_via(settings_factory, broker_url: str, proxy: TcpProxy) -> Settings:  # type: ignore[no-untyped-def]
    return settings_factory(  # type: ignore[no-any-return]
        broker={"url": via_port(broker_url, proxy.port), "confirm_timeout_s": CONFIRM_TIMEOUT_S},
        routing={"policy": "primary", "primary": "a"},
    )


async def spool_drained(api: Api) -> None:
    spool = api.ingress.spool
    assert spool is not None
    await wait_until(lambda: spool.backlog == 0 and spool.held == 0 and api.ingress.link.available, 30)


def copies(got: list[Queued]) -> tuple[Counter[str], Counter[str]]:
    """How many copies of each job are in the queue, and how many of them are marked."""
    every = Counter(item.job.id for item in got)
    marked = Counter(item.job.id for item in got if item.headers.get(H_POSSIBLE_DUPLICATE))
    return every, marked


async def test_replies_held_for_twice_the_confirm_timeout_leave_one_unmarked_copy_each(
    broker_cleanup, settings_factory, store_url, broker_url, proxy
):
    settings = settings_via(settings_factory, broker_url, proxy)
    spooled_before = SPOOLED._value.get()
    accepted: list[str] = []
    async with api_for(settings) as api:

        async def client(name: str, seconds: float) -> None:
            deadline = asyncio.get_running_loop().time() + seconds
            n = 0
            while asyncio.get_running_loop().time() < deadline:
                response = await api.submit(sms(body=f"{name} {n}"))
                assert response.status_code == 202, response.text
                accepted.append(response.json()["id"])
                n += 1
                await asyncio.sleep(0.02)

        await client("before", 0.3)
        proxy.reply_delay_s = 2 * CONFIRM_TIMEOUT_S
        await asyncio.gather(*(client(f"slow{c}", 3.0) for c in range(4)))
        proxy.reply_delay_s = 0.0
        await client("after", 0.3)
        await spool_drained(api)
    assert SPOOLED._value.get() > spooled_before, "held replies should have sent submits to the spool"

    got = await drain(broker_url, site_queue(settings.broker.prefix, "a"), expect=len(accepted), timeout_s=15)
    every, marked = copies(got)
    assert set(every) == set(accepted), (
        f"missing {len(set(accepted) - set(every))}, strays {set(every) - set(accepted)}"
    )
    unmarked_twice = {i for i in accepted if every[i] - marked[i] != 1}
    assert not unmarked_twice, f"{len(unmarked_twice)} of {len(accepted)} not exactly once unmarked"
    print(f"accepted {len(accepted)}, queued {len(got)}, marked copies {sum(marked.values())}")


async def test_a_connection_lost_before_the_late_confirm_brings_a_marked_second_copy(
    broker_cleanup, settings_factory, store_url, broker_url, proxy
):
    """The bundle reached the queue but its confirm was lost with the connection: the relay cannot know,
    so the spooled copy goes out too, marked."""
    settings = settings_via(settings_factory, broker_url, proxy)
    async with api_for(settings) as api:
        spool = api.ingress.spool
        assert spool is not None
        proxy.reply_delay_s = 2 * CONFIRM_TIMEOUT_S
        responses = await asyncio.gather(*(api.submit(sms(body=f"m{n}")) for n in range(20)))
        assert {r.status_code for r in responses} == {202}
        accepted = [r.json()["id"] for r in responses]
        assert spool.held == 20, "the submits should have stopped waiting for a publish still in flight"
        await proxy.cut()  # the broker has the bundle; its confirm is lost on the way back
        await wait_until(lambda: spool.held == 0, 10)
        proxy.reply_delay_s = 0.0
        await proxy.restore()
        await spool_drained(api)

    got = await drain(broker_url, site_queue(settings.broker.prefix, "a"), expect=40, timeout_s=15)
    every, marked = copies(got)
    assert {i: (every[i], marked[i]) for i in accepted} == {i: (2, 1) for i in accepted}
    assert set(every) == set(accepted)
