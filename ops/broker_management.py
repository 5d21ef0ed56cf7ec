"""RabbitMQ's management HTTP API as `relay status` and `relay drill --fault broker-node` read it: the
cluster's nodes (running or not, the VM's pid) and the relay's quorum queues (leader, members, members
online).

Any running node of a cluster answers for all of them, so the configured URLs (`broker.management_url`,
by default port 15672 of each broker host) are tried in turn until one answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from shared.broker_settings import BrokerSettings
from shared.errors import NotFound, TransientError

DEFAULT_USER = "guest"


class ManagementUnreachable(TransientError):
    """No configured management URL answered."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    base_url: str  # without credentials, ending in "/"
    auth: tuple[str, str]


def endpoints(settings: BrokerSettings) -> list[Endpoint]:
    """Each management URL with its credentials: its own, else those of the first broker URL."""
    amqp = urlsplit(settings.urls[0])
    default_auth = (unquote(amqp.username or DEFAULT_USER), unquote(amqp.password or DEFAULT_USER))
    found = []
    for url in settings.management_urls:
        parts = urlsplit(url)
        auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else default_auth
        netloc = parts.netloc.rpartition("@")[2]
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        found.append(Endpoint(base_url=urlunsplit((parts.scheme, netloc, path, "", "")), auth=auth))
    return found


def vhost_of(settings: BrokerSettings) -> str:
    """The virtual host of the broker URLs (AMQP: the path without its slash; none is "/")."""
    path = urlsplit(settings.urls[0]).path
    return unquote(path[1:]) if len(path) > 1 else "/"


class Management:
    """Reads the API of the first endpoint that answers; remembers which one did."""

    def __init__(self, *, settings: BrokerSettings, client: httpx.AsyncClient) -> None:
        self._endpoints = endpoints(settings)
        self._vhost = quote(vhost_of(settings), safe="")
        self._client = client
        self.answered_by: str | None = None

    @property
    def urls(self) -> list[str]:
        return [endpoint.base_url for endpoint in self._endpoints]

    async def get(self, path: str) -> Any:
        """GET `api/<path>` of the first endpoint that answers; `ManagementUnreachable` if none does,
        `NotFound` if it has no such thing."""
        failures = []
        # The one that answered last first: a dead node's endpoint costs a timeout on every call.
        ordered = sorted(self._endpoints, key=lambda e: e.base_url != self.answered_by)
        for endpoint in ordered:
            try:
                response = await self._client.get(f"{endpoint.base_url}api/{path}", auth=endpoint.auth)
                if response.status_code == 404:
                    raise NotFound(f"the management API has no {path}")
                response.raise_for_status()
                data = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                failures.append(f"{endpoint.base_url}: {_reason(exc)}")
                continue
            self.answered_by = endpoint.base_url
            return data
        raise ManagementUnreachable("management API unreachable (" + "; ".join(failures) + ")")

    async def nodes(self) -> list[dict[str, Any]]:
        data = await self.get("nodes")
        return [node for node in data if isinstance(node, dict)] if isinstance(data, list) else []

    async def queues(self, prefix: str) -> list[dict[str, Any]]:
        """The relay's queues (named `<prefix>.…`) in the broker URLs' virtual host."""
        data = await self.get(f"queues/{self._vhost}")
        if not isinstance(data, list):
            return []
        return [q for q in data if isinstance(q, dict) and str(q.get("name", "")).startswith(f"{prefix}.")]

    async def queue(self, name: str) -> dict[str, Any]:
        data = await self.get(f"queues/{self._vhost}/{quote(name, safe='')}")
        return data if isinstance(data, dict) else {}


def _reason(exc: Exception) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")
