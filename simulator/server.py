"""The simulated platform as one object: the platform port, the admin port, and the fault switch."""

from __future__ import annotations

import asyncio

from shared.logs import get_logger
from simulator.admin_api import AdminApi
from simulator.http11 import HttpServer
from simulator.platform_api import PlatformApi
from simulator.state import Counters, Fault, FaultMode, parse_fault

log = get_logger("relay.platform_sim")


class PlatformSimulator:
    """Start with `start()`, stop with `stop()`; `set_fault()` switches behaviour at runtime."""

    def __init__(self, *, host: str, port: int, admin_port: int, token: str | None = None) -> None:
        self.counters = Counters()
        self.platform = PlatformApi(counters=self.counters, token=token)
        self._platform_server = HttpServer(host=host, port=port, handler=self.platform.handle)
        admin = AdminApi(
            counters=self.counters,
            current_fault=lambda: self.platform.fault,
            apply_fault=self.set_fault,
            parse=parse_fault,
            extra=self.platform.reports.switch.admin,
        )
        self._admin_server = HttpServer(host=host, port=admin_port, handler=admin.handle)
        self._fault_lock = asyncio.Lock()

    @property
    def port(self) -> int:
        return self._platform_server.port

    @property
    def admin_port(self) -> int:
        return self._admin_server.port

    async def start(self) -> None:
        await self._admin_server.start()
        await self._platform_server.start()
        log.info("platform simulator listening", port=self.port, admin_port=self.admin_port)

    async def stop(self) -> None:
        await self._platform_server.stop()
        await self.platform.reports.close()
        await self._admin_server.stop()

    async def set_fault(self, fault: Fault) -> Fault:
        async with self._fault_lock:
            previous = self.platform.fault
            self.platform.fault = fault
            if fault.mode is FaultMode.DOWN:
                # Down means refused connects, as when the platform's host is gone: close the listening
                # socket and the connections clients keep alive.
                await self._platform_server.stop()
            elif not self._platform_server.listening:
                await self._platform_server.start()
            log.info("fault changed", previous=previous.mode.value, **fault.as_dict())
            return fault


async def run_until_stopped(simulator: PlatformSimulator, stop: asyncio.Event) -> None:
    await simulator.start()
    try:
        await stop.wait()
    finally:
        await simulator.stop()
