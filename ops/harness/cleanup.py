"""Deleting what a relay declared on the broker: every exchange and queue of its topology, and any other
queue under its prefix.

`python -m ops.harness.cleanup` deletes those of the configuration in use (`RELAY_CONFIG`).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import aio_pika

from shared.settings import Settings, load_settings
from shared.topology import topology_from


def queues_named_after(prefix: str) -> list[str]:
    """Queues of a local broker whose names start with `prefix.`, as `rabbitmqctl` lists them: a relay
    configured with other sites or retry tiers than the defaults declares queues a cleanup by the default
    topology would miss. Empty when rabbitmqctl is not there (a broker elsewhere)."""
    rabbitmqctl = shutil.which("rabbitmqctl")
    if rabbitmqctl is None:
        return []
    listed = subprocess.run(
        [rabbitmqctl, "-q", "list_queues", "name"], capture_output=True, text=True, timeout=60, check=False
    )
    return [name for name in listed.stdout.split() if name.startswith(f"{prefix}.")]


async def delete_broker_names(broker_url: str, settings: Settings) -> None:
    """Deletes the exchanges and queues of `settings`' topology and any other queue under its prefix."""
    topology = topology_from(settings)
    connection = await aio_pika.connect(broker_url)
    async with connection:
        channel = await connection.channel()
        for name in {spec.name for spec in topology.queues()} | set(queues_named_after(topology.prefix)):
            await channel.queue_delete(name)
        for name, _ in topology.exchanges():
            await channel.exchange_delete(name)


def main() -> None:
    settings = load_settings()
    asyncio.run(delete_broker_names(settings.broker.urls[0], settings))


if __name__ == "__main__":
    main()
