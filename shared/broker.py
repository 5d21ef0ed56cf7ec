"""Connections to RabbitMQ and the one way the relay publishes: persistent, mandatory, confirmed."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS, AMQPError, DeliveryError, PublishError
from aio_pika.robust_connection import RobustConnection
from aiormq import spec
from yarl import URL

from shared.broker_settings import BrokerSettings
from shared.envelope import CONTENT_TYPE
from shared.errors import BrokerUnavailable, PublishRefused
from shared.logs import get_logger

PERSISTENT = 2  # AMQP delivery_mode
TRANSIENT = 1
RECONNECT_INTERVAL_S = 1.0

log = get_logger("shared.broker")


def with_reconnect_interval(url: str, interval_s: float) -> str:
    """aio-pika's robust connection waits 5 s between reconnects unless the URL says otherwise."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("reconnect_interval", str(interval_s))
    return urlunsplit(parts._replace(query=urlencode(query)))


def node_order(urls: Sequence[str], start: int) -> list[str]:
    """The nodes of a cluster as one process tries them: the list rotated to begin at `start` (modulo
    its length), so processes started with different numbers spread over the nodes."""
    first = start % len(urls)
    return [*urls[first:], *urls[:first]]


# The step of aio-pika's robust connection that opens one transport; it reads `self.url`. It is private:
# should aio-pika rename it, this lookup fails at import rather than the override being skipped silently.
_connect_transport = getattr(RobustConnection, "_RobustConnection__connect_transport")  # noqa: B009


class ClusterConnection(RobustConnection):
    """A robust connection to one node of a cluster at a time.

    aio-pika reconnects to the one URL it was given; this connection makes every attempt (the first
    and each one after a lost connection) try the nodes in turn, beginning with the node after the one
    it last reached, so the connection moves off a dead node at its first reconnect.
    """

    def __init__(self, *, nodes: Sequence[str], client_properties: dict[str, Any]) -> None:
        self._nodes = tuple(URL(node) for node in nodes)
        self._next_node = 0
        super().__init__(self._nodes[0], client_properties=client_properties)

    async def _RobustConnection__connect_transport(self) -> None:
        failure: BaseException | None = None
        for _ in self._nodes:
            self.url = self._nodes[self._next_node]
            self._next_node = (self._next_node + 1) % len(self._nodes)
            try:
                await _connect_transport(self)
            except CONNECTION_EXCEPTIONS as exc:
                failure = exc
            else:
                return
        assert failure is not None
        raise failure


async def connect(
    settings: BrokerSettings, *, name: str = "relay", start: int | None = None
) -> AbstractRobustConnection:
    """A robust connection to a node of `broker.url`, the nodes tried from the `start`-th on (the
    process id unless given). It reconnects by itself, to the next node that answers, every
    `RECONNECT_INTERVAL_S` (unless the URL sets `reconnect_interval`) until one does."""
    nodes = node_order(settings.urls, os.getpid() if start is None else start)
    connection = ClusterConnection(
        nodes=[with_reconnect_interval(url, RECONNECT_INTERVAL_S) for url in nodes],
        client_properties={"connection_name": name},
    )
    try:
        await connection.connect(timeout=settings.connect_timeout_s)
    except (TimeoutError, OSError, AMQPError) as exc:
        raise BrokerUnavailable(f"cannot connect to the broker: {exc!r}") from exc
    return connection


class Fate(enum.Enum):
    """Where a publish ended, as far as the publisher can know."""

    CONFIRMED = "confirmed"  # the broker has it
    NOT_TAKEN = "not-taken"  # no queue has it: never sent, or returned as unroutable
    UNKNOWN = "unknown"  # sent, and no confirm can come any more (nacked, channel closed): it may be queued


@dataclass(frozen=True, slots=True)
class Verdict:
    fate: Fate
    reason: str = ""
    refused: bool = False  # the broker answered no (a nack, or returned as unroutable), not silence

    @property
    def confirmed(self) -> bool:
        return self.fate is Fate.CONFIRMED


CONFIRMED = Verdict(Fate.CONFIRMED)


class ConfirmedPublisher:
    """Publishes on a channel with publisher confirms; `publish` returns once the broker has the message.

    `mandatory` plus `on_return_raises` turn an unroutable message into an error rather than a silent drop.

    Publishes go straight to aio-pika's underlying aiormq channel, with `wait=False`: aio-pika's message
    objects, and aiormq holding the channel lock until the frame reaches the socket, cost about a third
    more CPU per publish and serialised concurrent publishes (a loop of 256 confirmed publishes in flight
    here: about 10,000/s this way against 7,500-8,200/s through aio-pika). The broker's confirm is
    awaited all the same.
    """

    def __init__(
        self,
        *,
        channel: AbstractChannel,
        confirm_timeout_s: float,
        connection: AbstractRobustConnection | None = None,
    ) -> None:
        self._channel = channel
        self._confirm_timeout_s = confirm_timeout_s
        self._underlay: aiormq.Channel | None = None
        self._connection = connection  # to open a channel in place of one that nacks
        self._renewal: asyncio.Task[None] | None = None
        self.renewals = 0

    @classmethod
    async def open(
        cls, connection: AbstractRobustConnection, *, confirm_timeout_s: float
    ) -> ConfirmedPublisher:
        channel = await _confirming_channel(connection)
        return cls(channel=channel, confirm_timeout_s=confirm_timeout_s, connection=connection)

    @property
    def channel(self) -> AbstractChannel:
        return self._channel

    async def publish(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        expiration_s: float | None = None,
        persistent: bool = True,
        timeout_s: float | None = None,
    ) -> None:
        """Raises `PublishRefused` when the broker refused or could not route the message, and
        `BrokerUnavailable` when no confirm came within `timeout_s` (the channel's default if None)."""
        timeout_s = timeout_s if timeout_s is not None else self._confirm_timeout_s
        properties = _properties(message_id, headers, expiration_s=expiration_s, persistent=persistent)
        try:
            channel = await self._ready_channel(timeout_s)
            await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
                timeout=timeout_s,
                wait=False,
            )
        except (DeliveryError, PublishError) as exc:
            if isinstance(exc, DeliveryError):
                self._renew_after_nack(channel)
            raise PublishRefused(
                f"broker refused the message for {exchange or routing_key!r}: {exc!r}"
            ) from exc
        except _LOST as exc:
            raise BrokerUnavailable(f"no confirm from the broker: {exc!r}") from exc

    async def send(
        self,
        body: bytes,
        *,
        exchange: str,
        routing_key: str,
        message_id: str | None = None,
        headers: Mapping[str, Any] | None = None,
        channel_timeout_s: float | None = None,
    ) -> Verdict:
        """Publishes a persistent message and waits for the broker's verdict, however long it takes.

        Unlike `publish` there is no timeout on the confirm: giving up on a confirm that may still come,
        and publishing again, is how unmarked second copies are made. The verdict comes with the confirm,
        the nack or the return, or when the channel or connection closes. Only the wait for a channel
        (nothing is sent yet) is bounded, by `channel_timeout_s`.
        """
        properties = _properties(message_id, headers, expiration_s=None, persistent=True)
        try:
            channel = await self._ready_channel(channel_timeout_s or self._confirm_timeout_s)
        except Exception as exc:  # whatever it was, nothing left
            return Verdict(Fate.NOT_TAKEN, f"no channel to the broker: {exc!r}")
        try:
            await channel.basic_publish(
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=properties,
                mandatory=True,
                timeout=None,
                wait=False,
            )
        except PublishError as exc:  # returned: routed to no queue
            return Verdict(Fate.NOT_TAKEN, f"unroutable to {routing_key!r}: {exc!r}", refused=True)
        except DeliveryError as exc:  # nacked: the broker does not promise it has the message
            self._renew_after_nack(channel)
            return Verdict(Fate.UNKNOWN, f"nacked: {exc!r}", refused=True)
        except asyncio.CancelledError:
            if _being_cancelled():
                raise
            # aiormq cancels the confirms still awaited when their channel closes.
            return Verdict(Fate.UNKNOWN, "the channel closed before the confirm")
        except Exception as exc:  # a closed channel or connection rejects its confirms with any error
            return Verdict(Fate.UNKNOWN, f"no confirm can come: {exc!r}")
        return CONFIRMED

    def _renew_after_nack(self, nacked_on: aiormq.Channel) -> None:
        """Publish on a new channel from now on, once per channel that nacked.

        A channel keeps its own view of each quorum queue. Measured on a three-node cluster that lost two
        nodes and got one back: one channel had every later publish to one queue nacked, for minutes,
        while the queue took publishes from other channels. The old channel is closed once the new one is
        open, which settles the confirms still awaited on it (`send`: unknown, so they go again marked).
        """
        if self._connection is None or self._renewal is not None or nacked_on is not self._underlay:
            return
        self._renewal = asyncio.create_task(self._renew(self._connection), name="publisher-channel-renewal")

    async def _renew(self, connection: AbstractRobustConnection) -> None:
        try:
            fresh = await _confirming_channel(connection)
        except Exception as exc:  # the connection is going: its reconnect brings the channel back
            log.warning("publisher channel not renewed after a nack", error=repr(exc))
            self._renewal = None
            return
        stale, self._channel, self._underlay = self._channel, fresh, None
        self.renewals += 1
        log.warning("publisher channel renewed after a nack", renewals=self.renewals)
        self._renewal = None
        with contextlib.suppress(Exception):
            await stale.close()

    async def _ready_channel(self, timeout_s: float) -> aiormq.Channel:
        channel = self._underlay
        if channel is None or channel.is_closed:
            # A robust channel being restored waits for its connection: bound that wait.
            async with asyncio.timeout(timeout_s):
                underlay = await self._channel.get_underlay_channel()
                # The abstract type lacks `wait`; aio-pika's channels are aiormq.Channel.
                channel = self._underlay = cast(aiormq.Channel, underlay)
        return channel


async def _confirming_channel(connection: AbstractRobustConnection) -> AbstractChannel:
    return await connection.channel(publisher_confirms=True, on_return_raises=True)


# What a publish can die of besides the broker's own refusal: no channel, a closed one, a timeout.
_LOST = (TimeoutError, AMQPError, aiormq.exceptions.AMQPError, OSError, RuntimeError)


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _properties(
    message_id: str | None, headers: Mapping[str, Any] | None, *, expiration_s: float | None, persistent: bool
) -> spec.Basic.Properties:
    return spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT if persistent else TRANSIENT,
        message_id=message_id,
        headers=dict(headers) if headers else None,
        expiration=str(int(expiration_s * 1000)) if expiration_s is not None else None,
    )


async def settle(message: AbstractIncomingMessage, *, ack: bool) -> None:
    """Ack, or nack back to its queue, a delivery whose handling is done. A delivery of a channel lost
    meanwhile cannot be settled: the broker redelivers it, so its consumer must take it twice."""
    with contextlib.suppress(Exception):
        if ack:
            await message.ack()
        else:
            await message.nack(requeue=True)
