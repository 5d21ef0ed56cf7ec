"""Settings of the broker (`[broker]`): the nodes of RabbitMQ, the names, the waits, the replicas."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_DELIVERY_LIMIT = 50


class BrokerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | list[str] = Field(
        "amqp://guest:guest@127.0.0.1:5672/",
        description="AMQP URL of RabbitMQ, or a list of the URLs of one cluster's nodes (in the environment "
        "a JSON list); each process starts from another node of the list (README: Broker cluster).",
    )
    prefix: str = Field(
        "relay",
        pattern=r"^[A-Za-z0-9_-]+$",
        description='Start of every exchange and queue name; site queues are "<prefix>.site.<name>".',
    )
    confirm_timeout_s: float = Field(
        1.0,
        gt=0,
        description="How long a submit waits for its publisher confirm before it spools the message "
        "instead (a confirm that comes later still settles the spooled copy).",
    )
    connect_timeout_s: float = Field(5.0, gt=0, description="Timeout of one connection attempt.")
    delivery_limit: int = Field(
        DEFAULT_DELIVERY_LIMIT,
        ge=1,
        description="Redeliveries of one message from a quorum queue (after a nack or a lost consumer) "
        'before the broker moves it to "<prefix>.parked", where the recorder makes it a dead letter (a job) '
        "or folds it (a report). Changing it means recreating the queues.",
    )
    quorum_group_size: int = Field(
        3,
        ge=1,
        description="Nodes that hold a replica of each quorum queue the relay declares (RabbitMQ takes at "
        "most the nodes running then); a publisher confirm means a majority of them has the message. "
        "Changing it means recreating the queues.",
    )

    management_url: str | list[str] | None = Field(
        None,
        description="RabbitMQ's management HTTP API (`relay status` reads nodes, queue leaders and replicas "
        "from it; `relay drill --fault broker-node` the leader's pid), one URL or one per node; unset: "
        "http on port 15672 of each `url`'s host, with `url`'s credentials.",
    )

    @field_validator("url")
    @classmethod
    def _some_url(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("name at least one node")
        return value

    @property
    def urls(self) -> list[str]:
        """The nodes of `url`, in the order written."""
        return [self.url] if isinstance(self.url, str) else list(self.url)

    @property
    def management_urls(self) -> list[str]:
        """`management_url` as a list; unset, port 15672 of each node's host (each host once)."""
        if self.management_url is not None:
            given = self.management_url
            return [given] if isinstance(given, str) else list(given)
        hosts = dict.fromkeys(urlsplit(url).hostname or "127.0.0.1" for url in self.urls)
        return [f"http://{f'[{host}]' if ':' in host else host}:15672/" for host in hosts]
