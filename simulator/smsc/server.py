"""The simulated SMSC as one object: the SMPP port, the admin port, and the fault switch."""

from __future__ import annotations

import asyncio
import contextlib

from shared.logs import get_logger
from simulator.admin_api import AdminApi
from simulator.http11 import HttpServer, Request, Response, json_response
from simulator.smsc.faults import SmscFault, SmscFaultMode, parse_smsc_fault
from simulator.smsc.session import SmscSession, SmscState

log = get_logger("relay.smsc_sim")


class SmscSimulator:
    """Start with `start()`, stop with `stop()`; `set_fault()` switches behaviour at runtime.

    `username`/`password` None: any credentials bind."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        admin_port: int,
        system_id: str = "SMSCSIM",
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.state = SmscState(system_id=system_id, username=username, password=password)
        self._server: asyncio.Server | None = None
        self._sessions: set[SmscSession] = set()
        admin = AdminApi(
            counters=self.state.counters,
            current_fault=lambda: self.state.fault,
            apply_fault=self.set_fault,
            parse=parse_smsc_fault,
            extra=self._admin_extra,
        )
        self._admin_server = HttpServer(host=host, port=admin_port, handler=admin.handle)
        self._fault_lock = asyncio.Lock()

    @property
    def admin_port(self) -> int:
        return self._admin_server.port

    async def start(self) -> None:
        await self._admin_server.start()
        await self._listen()
        log.info("SMSC simulator listening", port=self.port, admin_port=self.admin_port)

    async def stop(self) -> None:
        await self._stop_listening()
        await asyncio.gather(*(session.unbind() for session in list(self._sessions)))
        await self._admin_server.stop()

    async def set_fault(self, fault: SmscFault) -> SmscFault:
        async with self._fault_lock:
            previous, self.state.fault = self.state.fault, fault
            if fault.mode is SmscFaultMode.DOWN:
                await self._stop_listening()
                for session in list(self._sessions):
                    session.cut()
            else:
                await self._listen()
            if fault.mode in (SmscFaultMode.UNBIND, SmscFaultMode.BIND_REFUSED):
                await asyncio.gather(*(session.unbind() for session in list(self._sessions)))
            log.info("fault changed", previous=previous.mode.value, **fault.as_dict())
            return fault

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(
            self._serve, host=self.host, port=self.port, reuse_address=True
        )
        if self.port == 0:
            self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = SmscSession(reader=reader, writer=writer, state=self.state)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)

    def _admin_extra(self, request: Request) -> Response | None:
        if request.path.rstrip("/") == "/reports":
            return self.state.reports.admin(request)
        if (request.method, request.path.rstrip("/")) == ("GET", "/messages"):
            messages = [message.as_dict() for message in self.state.counters.messages]
            return json_response(200, {"messages": messages, "sessions": len(self._sessions)})
        return None


async def run_until_stopped(simulator: SmscSimulator, stop: asyncio.Event) -> None:
    await simulator.start()
    try:
        await stop.wait()
    finally:
        await simulator.stop()
