"""After a nack the confirmed publisher moves to a new channel (`ConfirmedPublisher._renew_after_nack`)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import DeliveryError
from aiormq import spec

from shared.broker import ConfirmedPublisher, Fate


class Underlay:
    def __init__(self, *, nacks: bool) -> None:
        self.nacks = nacks
        self.published = 0
        self.is_closed = False

    async def basic_publish(self, body: bytes, **_: Any) -> None:
        self.published += 1
        if self.nacks:
            raise DeliveryError(None, spec.Basic.Nack(delivery_tag=self.published))


class Channel:
    def __init__(self, underlay: Underlay) -> None:
        self.underlay = underlay
        self.closed = False

    async def get_underlay_channel(self) -> Underlay:
        return self.underlay

    async def close(self) -> None:
        self.closed = True


class Connection:
    """The first channel it opens nacks every publish; the ones after confirm."""

    def __init__(self) -> None:
        self.channels: list[Channel] = []

    async def channel(self, **_: Any) -> Channel:
        opened = Channel(Underlay(nacks=not self.channels))
        self.channels.append(opened)
        return opened


async def renewed(publisher: ConfirmedPublisher, count: int) -> None:
    for _ in range(100):  # the renewal runs as a task of its own: a few turns of the loop
        if publisher.renewals >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{publisher.renewals} renewals, not {count}")


async def test_after_a_nack_publishes_go_on_a_new_channel_and_the_old_one_is_closed() -> None:
    connection = Connection()
    publisher = await ConfirmedPublisher.open(
        cast(AbstractRobustConnection, connection), confirm_timeout_s=1.0
    )
    nacked = await publisher.send(b"one", exchange="jobs", routing_key="a", message_id="m1")
    assert nacked.fate is Fate.UNKNOWN and "nacked" in nacked.reason
    await renewed(publisher, 1)
    confirmed = await publisher.send(b"two", exchange="jobs", routing_key="a", message_id="m2")
    assert confirmed.confirmed
    first, second = connection.channels
    assert first.closed and not second.closed
    assert (first.underlay.published, second.underlay.published) == (1, 1)


async def test_nacks_from_the_channel_being_replaced_open_no_more_channels() -> None:
    connection = Connection()
    publisher = await ConfirmedPublisher.open(
        cast(AbstractRobustConnection, connection), confirm_timeout_s=1.0
    )
    verdicts = await asyncio.gather(
        *(publisher.send(b"x", exchange="jobs", routing_key="a", message_id=f"m{i}") for i in range(5))
    )
    assert all(v.fate is Fate.UNKNOWN for v in verdicts)
    await renewed(publisher, 1)
    await asyncio.sleep(0.01)
    assert len(connection.channels) == 2 and publisher.renewals == 1


async def test_a_publisher_made_from_a_bare_channel_keeps_it() -> None:
    channel = Channel(Underlay(nacks=True))
    publisher = ConfirmedPublisher(channel=cast(Any, channel), confirm_timeout_s=1.0)
    for _ in range(2):
        verdict = await publisher.send(b"x", exchange="jobs", routing_key="a", message_id="m")
        assert verdict.fate is Fate.UNKNOWN
    assert channel.underlay.published == 2 and not channel.closed and publisher.renewals == 0
