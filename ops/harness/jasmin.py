"""A real Jasmin 0.11 for tests: jasmind from its own virtual environment (``.ci/install-peers``), on free
ports, with a RabbitMQ vhost of its own, configured through its jCli console: a user for the HTTP API and
the SMPP server, an SMPP client connector to an SMSC the test runs, and a route to it.

Found at ``$RELAY_TEST_JASMIN_VENV`` or ``.peers/jasmin``; missing, the tests skip (fail with CI set).

Jasmin 0.11.1 loses every delivery receipt (``DLRMapNotFound``, an open upstream bug); the report tests run
0.11.0 (``$RELAY_TEST_JASMIN_0110_VENV`` or ``.peers/jasmin-0.11.0``) with its DLR lookup and DLR
thrower inside jasmind (``--enable-dlr-lookup --enable-dlr-thrower``), which calls the dlr-url and
retries every 30 s until answered ``ACK/Jasmin``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ops.harness.processes import PeerMissing, free_port, spawned, wait_for_port

JASMIN_VERSION = "0.11.1"
REPORTING_VERSION = "0.11.0"
_VENVS = {
    JASMIN_VERSION: ("RELAY_TEST_JASMIN_VENV", "jasmin"),
    REPORTING_VERSION: ("RELAY_TEST_JASMIN_0110_VENV", "jasmin-0.11.0"),
}
_DLR_FLAGS = ["--enable-dlr-lookup", "--enable-dlr-thrower"]
REPO = Path(__file__).resolve().parents[2]
USERNAME = "relay"
PASSWORD = "relaypw"
CONNECTOR = "smsc"
START_TIMEOUT_S = 30.0
# Jasmin's DLR maps expire by themselves; a database of their own keeps them apart from anything else.
REDIS_DBID = 13
_PROMPTS = (b"jcli : ", b"> ")
# jasmind's own start, less its machine-wide lock file: each instance here has its own ports, store and
# vhost, and a lock left by a killed instance would stop the next one.
_LAUNCH = """
import signal, sys
from twisted.internet import reactor
from jasmin.bin.jasmind import JasminDaemon, Options
options = Options()
options.parseOptions(sys.argv[1:])
daemon = JasminDaemon(options)
signal.signal(signal.SIGINT, daemon.sighandler_stop)
signal.signal(signal.SIGTERM, daemon.sighandler_stop)
daemon.start()
reactor.run()
"""
_NOISE = re.compile(r"[\r]+")


def jasmin_python(version: str = JASMIN_VERSION) -> Path:
    """The Python of Jasmin's virtual environment; skips (or fails under CI) when there is none."""
    variable, folder = _VENVS[version]
    venv = Path(os.environ.get(variable, REPO / ".peers" / folder))
    python = venv / "bin" / "python"
    if not python.exists():
        raise PeerMissing(f"Jasmin {version} is not installed in {venv} (run .ci/install-peers)")
    if shutil.which("rabbitmqctl") is None:
        raise PeerMissing("rabbitmqctl is needed to give Jasmin a vhost of its own")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 6379)) != 0:
            raise PeerMissing("Jasmin needs Redis at 127.0.0.1:6379 (.ci/install-peers starts one)")
    return python


class Jcli:
    """Jasmin's telnet console, line by line: each command's output up to the next prompt."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._sock.recv(4096)  # telnet negotiation and the banner; the prompt comes after a first line
        self.run("")

    def run(self, line: str) -> str:
        self._sock.sendall(line.encode() + b"\r\n")
        buffer = b""
        while not buffer.endswith(_PROMPTS):
            chunk = self._sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"jCli closed the console after {line!r}")
            buffer += chunk
        return _NOISE.sub("", buffer.decode(errors="replace"))

    def block(self, command: str, **options: object) -> str:
        """An add/update block: the command, one line per option, then `ok`; raises unless it saved."""
        self.run(command)
        for key, value in options.items():
            self.run(f"{key} {value}")
        answer = self.run("ok")
        if "Successfully" not in answer:
            self.run("ko")
            raise RuntimeError(f"jCli refused {command} {options}: {answer.strip()}")
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendall(b"quit\r\n")
        self._sock.close()


@dataclass
class JasminInstance:
    directory: Path
    python: Path
    smsc_port: int
    dlr: bool = False  # run the DLR lookup and thrower inside jasmind (0.11.0)
    http_port: int = field(default_factory=free_port)
    smpp_port: int = field(default_factory=free_port)
    jcli_port: int = field(default_factory=free_port)
    vhost: str = field(default_factory=lambda: f"relay-test-jasmin-{uuid.uuid4().hex[:8]}")
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def send_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/send"

    def start(self) -> None:
        self._rabbitmqctl("add_vhost", self.vhost)
        self._stack.callback(self._rabbitmqctl, "delete_vhost", self.vhost)
        self._rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        config = self._write_config()
        root = self.directory / "root"
        env = {**os.environ, "ROOT_PATH": str(root), "LOG_PATH": str(self.directory / "log")}
        args = [str(self.python), "-c", _LAUNCH, "-c", str(config), *(_DLR_FLAGS if self.dlr else [])]
        self._stack.enter_context(spawned(args, env=env, log=self.directory / "jasmind.out"))
        for port in (self.jcli_port, self.http_port, self.smpp_port):
            wait_for_port(port, timeout_s=START_TIMEOUT_S)
        self.configure()

    def close(self) -> None:
        self._stack.close()

    def jcli(self) -> Jcli:
        return Jcli(self.jcli_port)

    def configure(self) -> None:
        console = self.jcli()
        try:
            console.block("group -a", gid="relay")
            console.block("user -a", username=USERNAME, password=PASSWORD, gid="relay", uid=USERNAME)
            console.block(
                "smppccm -a",
                cid=CONNECTOR,
                host="127.0.0.1",
                port=self.smsc_port,
                username="jasmin",
                password="jasmin",
                submit_throughput=0,
            )
            console.run(f"smppccm -1 {CONNECTOR}")
            console.block(
                "mtrouter -a", type="DefaultRoute", connector=f"smppc({CONNECTOR})", rate="0.00", order=0
            )
        finally:
            console.close()
        self.wait_connector("BOUND_TRX")

    def wait_connector(self, session_state: str, *, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            console = self.jcli()
            try:
                listing = console.run("smppccm -l")
            finally:
                console.close()
            if re.search(rf"#{CONNECTOR}\s+\S+\s+{session_state}\b", listing):
                return
            time.sleep(0.2)
        raise TimeoutError(f"Jasmin's connector not {session_state} after {timeout_s} s")

    def _write_config(self) -> Path:
        spec = subprocess.run(
            [str(self.python), "-c", "import txamqp, os; print(os.path.dirname(txamqp.__file__))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for sub in ("root/etc/jasmin/store", "log"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        # Every listener on a free port of the loopback; the ones the tests never use too, so that two
        # instances (or a system Jasmin) never collide.
        sections: dict[str, dict[str, object]] = {
            "smpp-server": {"bind": "127.0.0.1", "port": self.smpp_port},
            "smpp-server-pb": {"bind": "127.0.0.1", "port": (pb := free_port())},
            "smpp-server-pb-client": {"port": pb},
            "client-management": {"bind": "127.0.0.1", "port": free_port()},
            "router": {"bind": "127.0.0.1", "port": free_port()},
            "jcli": {"bind": "127.0.0.1", "port": self.jcli_port, "authentication": "False"},
            "http-api": {"bind": "127.0.0.1", "port": self.http_port},
            "interceptor-client": {"port": free_port()},
            "amqp-broker": {
                "host": "127.0.0.1",
                "vhost": self.vhost,
                "spec": f"{spec}/specs/standard/amqp0-9-1.stripped.xml",
            },
            "redis-client": {"host": "127.0.0.1", "dbid": REDIS_DBID},
        }
        path = self.directory / "jasmin.cfg"
        path.write_text(
            "".join(
                f"[{name}]\n" + "".join(f"{key} = {value}\n" for key, value in options.items())
                for name, options in sections.items()
            )
        )
        return path

    @staticmethod
    def _rabbitmqctl(*args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def running_jasmin(
    directory: Path, *, smsc_port: int, version: str = JASMIN_VERSION
) -> Iterator[JasminInstance]:
    """A configured Jasmin whose route ends at the SMSC on `smsc_port`, stopped (and its vhost deleted)
    when the block ends. Version 0.11.0 runs with its DLR services (delivery reports)."""
    instance = JasminInstance(
        directory=directory,
        python=jasmin_python(version),
        smsc_port=smsc_port,
        dlr=version == REPORTING_VERSION,
    )
    try:
        instance.start()
        yield instance
    finally:
        instance.close()
