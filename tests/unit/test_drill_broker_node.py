"""The broker-node fault's refusals, which need no broker: a broker of one node, and a pid that is not
the node's process on this host (the kill itself is tested against a real cluster)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from ops.drill_broker_node import BrokerNodeFault, local_node_process
from ops.drill_plan import DrillRefused
from shared.settings import Settings


async def test_a_broker_of_one_node_is_refused_before_anything_is_asked() -> None:
    def no_request(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"asked {request.url}")

    config = Settings(broker={"url": "amqp://guest:guest@127.0.0.1:5672/"})  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.MockTransport(no_request)) as client:
        fault = BrokerNodeFault(site="a", config=config, run_dir=Path(), client=client, say=print)
        with pytest.raises(DrillRefused, match=r"needs a broker cluster: broker\.url names one node"):
            await fault.check_possible()


def test_a_pid_that_is_not_the_nodes_process_here_is_never_killed() -> None:
    # This test's own process: it exists, but its environment names no broker node.
    with pytest.raises(DrillRefused, match="not a process on this host"):
        local_node_process("rabbit@elsewhere", os.getpid())


def test_a_pid_the_api_gives_that_does_not_exist_here_is_refused() -> None:
    pid = 2**22 + 17  # above Linux's pid_max default
    with pytest.raises(DrillRefused, match=f"pid {pid}, says its API"):
        local_node_process("rabbit@elsewhere", pid)
