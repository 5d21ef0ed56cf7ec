"""`relay drill --fault broker-node`: SIGKILL of the broker node that leads the site's queue, and its
restart when the fault window ends.

The node is found through RabbitMQ's management API: the queue's `leader`, and that node's `os_pid`. The
drill kills only a process on this host whose environment names that node (`RABBITMQ_NODENAME`), so a pid
of another host is never signalled. Before the kill it reads the VM's command line, environment and folder;
to restart the node it starts that command again (detached, its output in the run directory), unless the
node came back by itself first (systemd, a container's restart policy). A node it may not read or cannot
start again is left to the operator, and the drill says so.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from ops.broker_management import Management, ManagementUnreachable
from ops.drill_plan import DrillRefused
from shared.errors import NotFound
from shared.settings import Settings
from shared.topology import site_queue

BROKER_NODE = "broker-node"
REJOIN_TIMEOUT_S = 120.0  # a restarted node rejoined in 10-25 s here


@dataclass(frozen=True, slots=True)
class NodeProcess:
    node: str
    pid: int
    argv: list[str] | None = None  # how to start it again; None: not known
    env: dict[str, str] | None = None
    cwd: str | None = None


def local_node_process(node: str, pid: int) -> NodeProcess:
    """The process `pid` on this host, if it is the broker node `node`; else `DrillRefused`."""
    try:
        process = psutil.Process(pid)
        env = process.environ()
    except psutil.NoSuchProcess:
        raise DrillRefused(f"node {node} (pid {pid}, says its API) is not a process on this host") from None
    except psutil.AccessDenied:
        raise DrillRefused(
            f"node {node} runs as pid {pid} of another user: run the drill as that user to kill it"
        ) from None
    name = env.get("RABBITMQ_NODENAME", "")
    if name != node and f"{name}@" != node[: len(name) + 1]:
        raise DrillRefused(
            f"node {node} is not a process on this host (pid {pid} here is another program): "
            "run the drill on the node's host"
        )
    try:
        return NodeProcess(node=node, pid=pid, argv=process.cmdline(), env=env, cwd=process.cwd())
    except psutil.Error:
        return NodeProcess(node=node, pid=pid)


class BrokerNodeFault:
    """Kills the leader of the site's queue at `inject()`, starts it again at `clear()`."""

    def __init__(
        self,
        *,
        site: str,
        config: Settings,
        run_dir: Path,
        client: httpx.AsyncClient,
        say: Callable[[str], None],
    ) -> None:
        self._queue = site_queue(config.broker.prefix, site)
        self._config = config
        self._log = run_dir / "broker-node.log"
        self._api = Management(settings=config.broker, client=client)
        self._say = say
        self._killed: NodeProcess | None = None
        self._restarted = False

    async def check_possible(self) -> None:
        """Refuse a broker of one node, and a leader the drill cannot find or may not kill."""
        if len(self._config.broker.urls) < 2:
            raise DrillRefused(
                "fault 'broker-node' needs a broker cluster: broker.url names one node, and killing it "
                "would take the relay's only broker away (list every node of the cluster in broker.url)"
            )
        await self._leader()

    async def _leader(self) -> NodeProcess:
        try:
            queue = await self._api.queue(self._queue)
            leader = str(queue.get("leader") or "")
            if not leader:
                raise DrillRefused(f"queue {self._queue} has no leader (is it a quorum queue?)")
            nodes = {str(n.get("name")): n for n in await self._api.nodes()}
        except NotFound:
            raise DrillRefused(f"queue {self._queue} is not declared on the broker") from None
        except ManagementUnreachable as exc:
            raise DrillRefused(f"fault 'broker-node' finds the leader through the {exc}") from None
        pid = nodes.get(leader, {}).get("os_pid")
        if not pid:
            raise DrillRefused(f"the management API does not tell the pid of node {leader} (yet)")
        return local_node_process(leader, int(pid))

    async def inject(self) -> float:
        node = await self._leader()
        try:
            os.kill(node.pid, signal.SIGKILL)
        except PermissionError:
            raise DrillRefused(f"may not kill node {node.node} (pid {node.pid}): not this user's") from None
        self._killed = node
        self._say(f"SIGKILLed broker node {node.node} (pid {node.pid}), the leader of {self._queue}")
        return time.time()

    async def clear(self) -> float:
        """Start the killed node again (unless it came back by itself) and wait until it runs."""
        cleared_at = time.time()
        node = self._killed
        if node is None:
            return cleared_at
        if await self._running(node.node):
            self._say(f"broker node {node.node} came back by itself")
        elif not self._restart(node):
            return cleared_at
        deadline = time.monotonic() + REJOIN_TIMEOUT_S
        while not await self._running(node.node):
            if time.monotonic() > deadline:
                self._say(f"broker node {node.node} is not running {REJOIN_TIMEOUT_S:g} s after its restart")
                return cleared_at
            await asyncio.sleep(0.5)
        self._say(f"broker node {node.node} runs again, {time.time() - cleared_at:.1f} s after its restart")
        return cleared_at

    async def heal(self) -> None:
        """A drill stopped half-way still starts the node it killed."""
        if self._killed is not None and not self._restarted and not await self._running(self._killed.node):
            self._restart(self._killed)

    def _restart(self, node: NodeProcess) -> bool:
        self._restarted = True
        if node.argv is None:
            self._say(
                f"cannot restart broker node {node.node} from here (its command line was not readable): "
                "start it again on its host (e.g. `systemctl start rabbitmq-server`)"
            )
            return False
        with self._log.open("ab") as log:
            process = subprocess.Popen(
                node.argv,
                env=node.env,
                cwd=node.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the node outlives the drill
            )
        self._say(f"restarted broker node {node.node}: pid {process.pid}, output in {self._log}")
        return True

    async def _running(self, node: str) -> bool:
        try:
            nodes = await self._api.nodes()
        except (ManagementUnreachable, NotFound):
            return False
        return any(n.get("name") == node and n.get("running") for n in nodes)
