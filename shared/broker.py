"""Connections to RabbitMQ and the one way the relay publishes: persistent, mandatory, confirmed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection, DeliveryMode
from aio_pika.exceptions import AMQPError, DeliveryError, PublishError

from shared.envelope import CONTENT_TYPE
from shared.errors import BrokerUnavailable, PublishRefused
from shared.settings import BrokerSettings

DEFAULT_EXCHANGE = ""


async def connect(settings: BrokerSettings, *, name: str = "relay") -> AbstractRobustConnection:
    """A robust connection: it reconnects by itself after the broker comes back."""
    try:
        return await aio_pika.connect_robust(
            settings.url, timeout=settings.connect_timeout_s, client_properties={"connection_name": name}
        )
    except (TimeoutError, OSError, AMQPError) as exc:
        raise BrokerUnavailable(f"cannot connect to the broker: {exc!r}") from exc


class ConfirmedPublisher:
    """Publishes on a channel with publisher confirms; `publish` returns once the broker has the message.

    `mandatory` plus `on_return_raises` turn an unroutable message into an error rather than a silent drop.
    """

    def __init__(self, *, channel: AbstractChannel, confirm_timeout_s: float) -> None:
        self._channel = channel
        self._confirm_timeout_s = confirm_timeout_s
        self._exchanges: dict[str, AbstractExchange] = {}

    @classmethod
    async def open(
        cls, connection: AbstractRobustConnection, *, confirm_timeout_s: float
    ) -> ConfirmedPublisher:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return cls(channel=channel, confirm_timeout_s=confirm_timeout_s)

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
        message = aio_pika.Message(
            body,
            content_type=CONTENT_TYPE,
            delivery_mode=DeliveryMode.PERSISTENT if persistent else DeliveryMode.NOT_PERSISTENT,
            message_id=message_id,
            headers=dict(headers) if headers else None,
            expiration=expiration_s,
        )
        try:
            target = await self._exchange(exchange)
            await target.publish(
                message,
                routing_key=routing_key,
                mandatory=True,
                timeout=timeout_s if timeout_s is not None else self._confirm_timeout_s,
            )
        except (DeliveryError, PublishError) as exc:
            raise PublishRefused(
                f"broker refused the message for {exchange or routing_key!r}: {exc!r}"
            ) from exc
        except (TimeoutError, AMQPError, aiormq.exceptions.AMQPError, OSError, RuntimeError) as exc:
            raise BrokerUnavailable(f"no confirm from the broker: {exc!r}") from exc

    async def _exchange(self, name: str) -> AbstractExchange:
        if name == DEFAULT_EXCHANGE:
            return self._channel.default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            exchange = await self._channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange
