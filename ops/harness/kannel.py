"""Real Kannels as platforms (the tests', the benchmarks' baseline): bearerbox + smsbox + a fake SMSC
(fakesmsc) that records what it gets.

Each instance lives in its own temporary directory on its own free ports, so several (sites A and B) run side
by side. fakesmsc runs receive-only (``-m 0``) and logs one ``Got message N: <from to type data>`` line per
message it receives; `received()` parses those lines.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ops.harness.processes import free_port, listening, spawned, wait_for_port

USERNAME = "tester"
PASSWORD = "foobar"
ADMIN_PASSWORD = "secret"
START_TIMEOUT_S = 15.0

_GOT = re.compile(r"Got message \d+: <(?P<sender>\S*) (?P<receiver>\S*) (?P<kind>\S+) (?P<data>.*)>\s*$")

CORE_GROUP = """\
group = core
admin-port = {admin_port}
admin-password = {admin_password}
admin-allow-ip = "127.0.0.1"
smsbox-port = {smsbox_port}
box-allow-ip = "127.0.0.1"
log-file = "{dir}/bearerbox.log"
log-level = 1
access-log = "{dir}/access.log"
store-type = spool
store-location = "{dir}/spool"
"""
# The smsbox whose sendsms the relay (or a test) calls.
SMSBOX_GROUP = """\
group = smsbox
bearerbox-host = 127.0.0.1
sendsms-port = {sendsms_port}
log-file = "{dir}/smsbox.log"
log-level = 1
"""

_CONFIG = (
    CORE_GROUP
    + """
group = smsc
smsc = fake
smsc-id = fake
port = {smsc_port}
connect-allow-ip = "127.0.0.1"

"""
    + SMSBOX_GROUP
    + """
group = sendsms-user
username = {username}
password = {password}
{long_messages}
group = sms-service
keyword = default
text = "ok"
"""
)


# What a sendsms-user sends of a long text: up to 10 concatenated parts, unless the instance keeps Kannel's
# own defaults (one part, no concatenation: the rest of the text is dropped).
_LONG_MESSAGES = "max-messages = 10\nconcatenation = true\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeSmscMessage:
    sender: str
    receiver: str
    kind: str  # "text", "ucs-2", "data", "udh-text", ...
    text: str  # decoded message text


def _decode(kind: str, data: str) -> str:
    if kind == "text":
        return data
    raw = urllib.parse.unquote_to_bytes(data.replace("+", "%20"))
    if kind.startswith("ucs"):
        return raw.decode("utf-16-be", errors="replace")
    return raw.decode("latin-1")


def parse_fakesmsc_log(text: str) -> list[FakeSmscMessage]:
    messages = []
    for line in text.splitlines():
        match = _GOT.search(line)
        if match:
            kind = match["kind"]
            messages.append(
                FakeSmscMessage(
                    sender=match["sender"],
                    receiver=match["receiver"],
                    kind=kind,
                    text=_decode(kind, match["data"]),
                )
            )
    return messages


@dataclass(kw_only=True)
class KannelInstance:
    """One running Kannel; kill and restart bearerbox or smsbox to make faults."""

    directory: Path
    binaries: dict[str, str]
    admin_port: int = field(default_factory=free_port)
    smsbox_port: int = field(default_factory=free_port)
    smsc_port: int = field(default_factory=free_port)
    sendsms_port: int = field(default_factory=free_port)
    username: str = USERNAME
    password: str = PASSWORD
    kannel_defaults: bool = False  # the sendsms-user as Kannel has it out of the box
    with_smsc: bool = True  # False: no fakesmsc, bearerbox queues what smsbox accepts (accept-only runs)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _process_groups: set[int] = field(default_factory=set)
    _fakesmsc_runs: int = 0

    @property
    def sendsms_url(self) -> str:
        return f"http://127.0.0.1:{self.sendsms_port}/cgi-bin/sendsms"

    @property
    def config_path(self) -> Path:
        return self.directory / "kannel.conf"

    def write_config(self) -> None:
        (self.directory / "spool").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            _CONFIG.format(
                dir=self.directory,
                admin_port=self.admin_port,
                admin_password=ADMIN_PASSWORD,
                smsbox_port=self.smsbox_port,
                smsc_port=self.smsc_port,
                sendsms_port=self.sendsms_port,
                username=self.username,
                password=self.password,
                long_messages="" if self.kannel_defaults else _LONG_MESSAGES,
            )
        )

    def start(self) -> None:
        self.write_config()
        self._start_bearerbox()
        self.start_smsbox()
        if self.with_smsc:
            self._start_fakesmsc()
        self.wait_until_online()

    def close(self) -> None:
        # Nobody needs a graceful Kannel shutdown here; SIGKILL every group (including an smsbox that
        # restarted itself under a new pid) so teardown takes no seconds.
        for group in self._process_groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        self._stack.close()

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = self.directory / f"{name}.out"
        proc = self._stack.enter_context(spawned(args, log=log, cwd=self.directory))
        self._processes[name] = proc
        self._process_groups.add(proc.pid)
        return proc

    def _start_bearerbox(self) -> None:
        self._spawn("bearerbox", [self.binaries["bearerbox"], str(self.config_path)])
        wait_for_port(self.smsbox_port, timeout_s=START_TIMEOUT_S)
        wait_for_port(self.smsc_port, timeout_s=START_TIMEOUT_S)

    def start_smsbox(self) -> None:
        self._spawn("smsbox", [self.binaries["smsbox"], str(self.config_path)])
        wait_for_port(self.sendsms_port, timeout_s=START_TIMEOUT_S)

    def _start_fakesmsc(self) -> None:
        # fakesmsc exits when bearerbox goes away; each run logs to its own file.
        self._fakesmsc_runs += 1
        name = f"fakesmsc-{self._fakesmsc_runs}"
        self._spawn(
            name, [self.binaries["fakesmsc"], "-H", "127.0.0.1", "-r", str(self.smsc_port), "-m", "0", "x"]
        )

    def wait_until_online(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until bearerbox reports the fake SMSC online (if it has one) and smsbox answers on its sendsms
        port."""
        deadline = time.monotonic() + timeout_s
        status_url = f"http://127.0.0.1:{self.admin_port}/status.txt"
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                status = httpx.get(status_url, params={"password": ADMIN_PASSWORD}, timeout=2).text
                smsc_online = "online" in status.split("SMSC connections:", 1)[-1] or not self.with_smsc
                if smsc_online and listening("127.0.0.1", self.sendsms_port):
                    return
            time.sleep(0.1)
        raise TimeoutError(f"Kannel in {self.directory} not online after {timeout_s} s")

    def kill_bearerbox(self, *, timeout_s: float = 10.0) -> None:
        """SIGKILL bearerbox; returns once smsbox has noticed and closed its sendsms port."""
        proc = self._processes["bearerbox"]
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        self._wait_closed(self.sendsms_port, timeout_s)

    def restart_bearerbox(self, *, fresh_smsbox: bool = True) -> None:
        """Start bearerbox again on the same store, and fakesmsc (it exits with bearerbox).

        smsbox restarts itself after losing bearerbox but waits about 10 s first; `fresh_smsbox` replaces
        it with a new one at once so faults stay quick.
        """
        self._start_bearerbox()
        if fresh_smsbox:
            self._kill_group("smsbox")
            self.start_smsbox()
        self._start_fakesmsc()
        self.wait_until_online(timeout_s=START_TIMEOUT_S if fresh_smsbox else 3 * START_TIMEOUT_S)

    def kill_smsbox(self, *, timeout_s: float = 10.0) -> None:
        """SIGKILL smsbox (and any copy it restarted); returns once its sendsms port is closed."""
        self._kill_group("smsbox")
        self._wait_closed(self.sendsms_port, timeout_s)

    def _kill_group(self, name: str) -> None:
        proc = self._processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)

    @staticmethod
    def _wait_closed(port: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while listening("127.0.0.1", port):
            if time.monotonic() > deadline:
                raise TimeoutError(f"port {port} still listening after {timeout_s} s")
            time.sleep(0.05)

    def pids(self) -> dict[str, int]:
        """The pid of every program started, by name: bearerbox, smsbox, fakesmsc-<run>."""
        return {name: proc.pid for name, proc in self._processes.items()}

    def fakesmsc_log(self) -> Path:
        """The log of fakesmsc's current run (`Got message` lines)."""
        return self.directory / f"fakesmsc-{self._fakesmsc_runs}.out"

    def received(self) -> list[FakeSmscMessage]:
        """Every message the fake SMSC got, over all its runs, in order."""
        messages: list[FakeSmscMessage] = []
        for run in range(1, self._fakesmsc_runs + 1):
            path = self.directory / f"fakesmsc-{run}.out"
            if path.exists():
                messages.extend(parse_fakesmsc_log(path.read_text(encoding="latin-1")))
        return messages

    def wait_for_received(self, count: int, *, timeout_s: float = 10.0) -> list[FakeSmscMessage]:
        """The received messages once there are at least `count` (or all there are after the timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            messages = self.received()
            if len(messages) >= count or time.monotonic() > deadline:
                return messages
            time.sleep(0.1)


@contextlib.contextmanager
def running_kannel(
    directory: Path, binaries: dict[str, str], *, kannel_defaults: bool = False, with_smsc: bool = True
) -> Iterator[KannelInstance]:
    """A started Kannel instance in `directory`, stopped (SIGKILL) when the block ends; `kannel_defaults`
    keeps Kannel's own sendsms-user limits on long texts; without `with_smsc` it has no fake SMSC and
    only queues what it accepts."""
    instance = KannelInstance(
        directory=directory, binaries=binaries, kannel_defaults=kannel_defaults, with_smsc=with_smsc
    )
    try:
        instance.start()
        yield instance
    finally:
        instance.close()


def find_binaries() -> dict[str, str] | None:
    """Paths of bearerbox, smsbox and fakesmsc as Debian's kannel and kannel-extras install them; None if
    any is missing."""
    binaries = {
        "bearerbox": shutil.which("bearerbox") or "/usr/sbin/bearerbox",
        "smsbox": shutil.which("smsbox") or "/usr/sbin/smsbox",
        "fakesmsc": "/usr/lib/kannel/test/fakesmsc",
    }
    return binaries if all(Path(path).exists() for path in binaries.values()) else None
