"""A real three-node RabbitMQ cluster on this machine, beside any broker already running.

Each node is the Debian package's `rabbitmq-server` with a node name, AMQP, distribution and management
ports, data and log folders and a config file of its own, and one plugin, the management API (it ships in
the Debian package), which `relay status` reads; the nodes share an Erlang cookie written to a private
HOME, and join the first node with `rabbitmqctl join_cluster`. Everything lives under one folder that
`stop()` deletes after stopping the nodes.

A node is known by its pid file, not by the process this harness started: a node that someone else
(`relay drill --fault broker-node`) killed and started again is the same node, and `stop()` stops it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from ops.harness.processes import free_port, listening

SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
CTL = Path("/usr/lib/rabbitmq/bin/rabbitmqctl")
BOOT_TIMEOUT_S = 120.0
CTL_TIMEOUT_S = 120.0


class ClusterFailed(RuntimeError):
    pass


def cluster_possible() -> str | None:
    """Why no cluster can start here, or None when it can."""
    if not SERVER.exists() or not CTL.exists():
        return "no rabbitmq-server (the Debian package rabbitmq-server)"
    if shutil.which("erl") is None:
        return "no Erlang runtime (erl)"
    return None


@dataclass(slots=True)
class RabbitNode:
    name: str  # e.g. relaytest1-ab12@localhost
    amqp_port: int
    dist_port: int
    management_port: int
    home: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def management_url(self) -> str:
        return f"http://127.0.0.1:{self.management_port}/"

    @property
    def pid_file(self) -> Path:
        # The node writes it at boot (rabbit_prelaunch), wherever it was started from.
        return self.home / "mnesia" / f"{self.name}.pid"

    @property
    def pid(self) -> int | None:
        """The pid of the node's VM while it runs, whoever started it."""
        if self.process is not None and self.process.poll() is None:
            return self.process.pid
        try:
            pid = int(self.pid_file.read_text().strip())
            process = psutil.Process(pid)
            # The VM's command line does not name the node (it names itself at boot); its environment does.
            if (
                process.status() == psutil.STATUS_ZOMBIE
                or process.environ().get("RABBITMQ_NODENAME") != self.name
            ):
                return None
        except (OSError, ValueError, psutil.Error):
            return None
        return pid

    @property
    def alive(self) -> bool:
        return self.pid is not None


@dataclass(slots=True)
class RabbitCluster:
    root: Path
    size: int = 3
    nodes: list[RabbitNode] = field(default_factory=list)
    formed_in_s: float = 0.0

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def management_urls(self) -> list[str]:
        return [node.management_url for node in self.nodes]

    def start(self) -> None:
        began = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        cookie = self.root / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)
        (self.root / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.root / "rabbitmq-env.conf").write_text("")
        tag = secrets.token_hex(2)
        for index in range(1, self.size + 1):
            node = RabbitNode(
                name=f"relaytest{index}-{tag}@localhost",
                amqp_port=free_port(),
                dist_port=free_port(),
                management_port=free_port(),
                home=self.root / f"node{index}",
            )
            node.home.mkdir(parents=True, exist_ok=True)
            # Guest may connect from 127.0.0.1 anyway; stating it keeps the nodes independent of /etc.
            (node.home / "rabbitmq.conf").write_text(
                "loopback_users = none\n"
                "management.tcp.ip = 127.0.0.1\n"
                f"management.tcp.port = {node.management_port}\n"
            )
            self.nodes.append(node)
        for node in self.nodes:
            self.launch(node)
        for node in self.nodes:
            self.wait_booted(node)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        self.formed_in_s = time.monotonic() - began

    def launch(self, node: RabbitNode) -> None:
        node.home.mkdir(parents=True, exist_ok=True)
        log = (node.home / "server.out").open("ab")
        node.process = subprocess.Popen(
            [str(SERVER)], env=self._env(node), stdout=log, stderr=subprocess.STDOUT, cwd=self.root
        )
        log.close()

    def wait_booted(self, node: RabbitNode) -> None:
        """The AMQP listener opens last in a node's boot (and again at `start_app`)."""
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while not listening("127.0.0.1", node.amqp_port):
            if not node.alive:
                raise ClusterFailed(f"{node.name} exited while booting: {self._tail(node)}")
            if time.monotonic() > deadline:
                raise ClusterFailed(f"{node.name} did not boot in {BOOT_TIMEOUT_S:.0f} s: {self._tail(node)}")
            time.sleep(0.2)

    def kill(self, node: RabbitNode) -> None:
        """SIGKILL: the node's VM ends at once, nothing said to its peers or clients."""
        pid = node.pid
        assert pid is not None, f"{node.name} is not running"
        os.kill(pid, signal.SIGKILL)
        self._wait_gone(node, pid, timeout_s=30)

    def restart(self, node: RabbitNode) -> None:
        """Starts a killed node again on its own data: it rejoins the cluster by itself."""
        self.launch(node)
        self.wait_booted(node)

    def revive(self) -> None:
        """Restart every node that is down, so a failed test leaves the next one a whole cluster."""
        for node in self.nodes:
            if not node.alive:
                self.restart(node)

    def ctl(self, node: RabbitNode, *args: str) -> str:
        done = subprocess.run(
            [str(CTL), "-n", node.name, "-q", *args],
            env=self._env(node),
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            raise ClusterFailed(f"rabbitmqctl {' '.join(args)} on {node.name}: {done.stdout}{done.stderr}")
        return done.stdout

    def leader_of(self, queue: str) -> RabbitNode:
        """The node whose Raft member leads `queue` (asked of any running node)."""
        asker = next(node for node in self.nodes if node.alive)
        for line in self.ctl(asker, "list_queues", "name", "leader", "--no-table-headers").splitlines():
            name, _, leader = line.partition("\t")
            if name == queue:
                return next(node for node in self.nodes if node.name == leader.strip())
        raise ClusterFailed(f"no queue {queue!r} on the cluster")

    def stop(self) -> None:
        """Stops every node (SIGTERM, then SIGKILL) and deletes every folder."""
        running = {node.name: node.pid for node in self.nodes}
        for node in self.nodes:
            pid = running[node.name]
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        for node in self.nodes:
            pid = running[node.name]
            if pid is None:
                continue
            if not self._wait_gone(node, pid, timeout_s=60):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_gone(node, pid, timeout_s=30)
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.kill()
                node.process.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _wait_gone(node: RabbitNode, pid: int, *, timeout_s: float) -> bool:
        """Whether the node's VM `pid` ended within `timeout_s` (reaped if it is this harness's child)."""
        if node.process is not None and node.process.pid == pid:
            try:
                node.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return False
            return True
        # Started by another process: not this one's child to reap, only to watch (a zombie has ended).
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    return True
            except psutil.NoSuchProcess:
                return True
            time.sleep(0.2)
        return False

    def _env(self, node: RabbitNode) -> dict[str, str]:
        root = self.root
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(root),  # where the Erlang cookie of these nodes is
            "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(node.home / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(root / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(node.amqp_port),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_MNESIA_BASE": str(node.home / "mnesia"),
            "RABBITMQ_LOG_BASE": str(node.home / "log"),
            # The script then execs the VM: the process here is the node itself, and SIGKILL kills it.
            "RUNNING_UNDER_SYSTEMD": "1",
        }

    def _tail(self, node: RabbitNode) -> str:
        out = node.home / "server.out"
        return out.read_text(errors="replace")[-2000:] if out.exists() else "(no output)"
