"""A broker node killed under traffic: a three-node RabbitMQ cluster formed on this machine, a `relay up`
deployment pointed at every node, steady submits retried by Idempotency-Key, and the node that leads site
a's queue SIGKILLed, then restarted.

Prints the longest time without a delivery around the kill (the gap), the window in which submits got
answers other than 202 (the submit error window), and what was lost or sent twice.
Run alone: `python -m bench.bench_cluster`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

from ops.harness.cluster_traffic import (
    RATE_PER_S,
    delivered,
    duplicates_at_platforms,
    marked_attempts,
    stream_through,
)
from ops.harness.deployment import Deployment, relay_up, settings_of
from ops.harness.rabbit_cluster import RabbitCluster


async def measure(up: Deployment, cluster: RabbitCluster, *, seconds: float) -> dict[str, Any]:
    prefix = settings_of(up.config).broker.prefix
    leader = cluster.leader_of(f"{prefix}.site.a")
    submits, clock, fault_time = await stream_through(
        up,
        count=int(RATE_PER_S * seconds),
        fault_at_s=seconds / 4,
        fault=lambda: cluster.kill(leader),
        heal_at_s=seconds / 2,
        heal=lambda: cluster.restart(leader),
    )
    lost = await delivered(up, clock, submits)
    store = Path(settings_of(up.config).store.url.split("///", 1)[1])
    return {
        "gap_s": round(clock.gap_s(start=fault_time - 1.0, end=fault_time + 30.0), 2),
        "submit_error_window_s": round(submits.error_window_s, 2),
        "submits_not_202": len(submits.failures),
        "accepted": len(submits.accepted),
        "lost": len(lost),
        "duplicates": duplicates_at_platforms(up.simulators),
        "marked_attempts": marked_attempts(store),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="Length of the submit stream.")
    args = parser.parse_args()
    cluster = RabbitCluster(root=Path(tempfile.mkdtemp(prefix="relay-cluster-")))
    try:
        cluster.start()
        with tempfile.TemporaryDirectory() as directory:
            prefix = f"b{uuid.uuid4().hex[:10]}"
            with relay_up(Path(directory), broker_url=cluster.urls, prefix=prefix) as up:
                result = asyncio.run(measure(up, cluster, seconds=args.seconds))
        print(json.dumps({"cluster_formed_s": round(cluster.formed_in_s, 1), **result}, indent=2))
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
