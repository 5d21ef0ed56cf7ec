"""Helpers of the drop-in API tests: the relay served over real HTTP in this process (the clients under
test are blocking SDKs and real Kannel programs), and a real Kannel acting as a client of the relay."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn

from ingress.app import create_app
from ingress.service import Ingress, running
from ops.harness.kannel import CORE_GROUP, SMSBOX_GROUP
from shared.settings import Settings
from shared.store.accounts import ensure_account_sid
from shared.store.api_keys import create_key
from tests.helpers import free_port, spawned, wait_for_port

TENANT = "bank-a"
START_TIMEOUT_S = 20.0


@dataclass
class Served:
    url: str
    ingress: Ingress
    settings: Settings
    key: str  # tenant "bank-a"
    sid: str  # its account SID
    other_key: str  # tenant "bank-b"
    other_sid: str


@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[Served]:
    """The relay's HTTP API on a free port of 127.0.0.1, with keys and account SIDs of two tenants."""
    async with running(settings) as ingress:
        await asyncio.wait_for(ingress.link.ready.wait(), 10)
        key, _ = await create_key(ingress.sessions, tenant=TENANT)
        other, _ = await create_key(ingress.sessions, tenant="bank-b")
        sid = await ensure_account_sid(ingress.sessions, tenant=TENANT)
        other_sid = await ensure_account_sid(ingress.sessions, tenant="bank-b")
        port = free_port()
        config = uvicorn.Config(
            create_app(settings, ingress=ingress),
            host="127.0.0.1",
            port=port,
            lifespan="off",
            log_config=None,
            access_log=False,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        try:
            await asyncio.to_thread(wait_for_port, port, timeout_s=START_TIMEOUT_S)
            yield Served(
                url=f"http://127.0.0.1:{port}",
                ingress=ingress,
                settings=settings,
                key=key,
                sid=sid,
                other_key=other,
                other_sid=other_sid,
            )
        finally:
            server.should_exit = True
            await task


_CONFIG = (
    CORE_GROUP
    + """
group = smsc
smsc = http
smsc-id = relay
system-type = kannel
send-url = "{send_url}"
smsc-username = "{username}"
smsc-password = "{password}"
port = {receive_port}
connect-allow-ip = "127.0.0.1"
# Long texts whole: split, they would reach the relay as UDH parts, which it refuses.
max-sms-octets = 1600

"""
    + SMSBOX_GROUP
    + """
group = sendsms-user
username = app
password = app-secret
max-messages = 10
concatenation = true
"""
)


@dataclass
class KannelClient:
    """A customer's Kannel whose SMSC is the relay: bearerbox (`smsc = http`, `system-type = kannel`,
    `send-url` at the relay) fed by its own smsbox's sendsms."""

    directory: Path
    binaries: dict[str, str]
    send_url: str
    username: str
    password: str
    admin_port: int = field(default_factory=free_port)
    smsbox_port: int = field(default_factory=free_port)
    receive_port: int = field(default_factory=free_port)
    sendsms_port: int = field(default_factory=free_port)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _groups: list[int] = field(default_factory=list)

    def start(self) -> None:
        (self.directory / "spool").mkdir(parents=True, exist_ok=True)
        config = self.directory / "kannel.conf"
        config.write_text(
            _CONFIG.format(
                dir=self.directory,
                admin_port=self.admin_port,
                admin_password="secret",
                smsbox_port=self.smsbox_port,
                receive_port=self.receive_port,
                sendsms_port=self.sendsms_port,
                send_url=self.send_url,
                username=self.username,
                password=self.password,
            )
        )
        self._spawn("bearerbox", config)
        wait_for_port(self.smsbox_port, timeout_s=START_TIMEOUT_S)
        self._spawn("smsbox", config)
        wait_for_port(self.sendsms_port, timeout_s=START_TIMEOUT_S)

    def _spawn(self, name: str, config: Path) -> subprocess.Popen[bytes]:
        proc = self._stack.enter_context(
            spawned(
                [self.binaries[name], str(config)], log=self.directory / f"{name}.out", cwd=self.directory
            )
        )
        self._groups.append(proc.pid)
        return proc

    def close(self) -> None:
        for group in self._groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        self._stack.close()

    def sendsms(self, **params: str) -> httpx.Response:
        """A submit to this Kannel's own sendsms, as the customer's application makes it."""
        return httpx.get(
            f"http://127.0.0.1:{self.sendsms_port}/cgi-bin/sendsms",
            params={"username": "app", "password": "app-secret", **params},
            timeout=10,
        )

    def sent_log(self, count: int, *, timeout_s: float = 15.0) -> list[str]:
        """The access log's lines for messages sent to the relay or failed there, once there are `count`."""
        deadline = time.monotonic() + timeout_s
        while True:
            path = self.directory / "access.log"
            lines = [
                line
                for line in (path.read_text(errors="replace") if path.exists() else "").splitlines()
                if "Send SMS [SMSC:relay]" in line or "Sent SMS [SMSC:relay]" in line
            ]
            if len(lines) >= count or time.monotonic() > deadline:
                return lines
            time.sleep(0.1)
