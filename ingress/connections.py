"""Bounds on what a slow or hostile client can hold: uvicorn's HTTP protocol with deadlines.

uvicorn closes an idle keep-alive connection, but not one that sends its request head or body slowly
(slowloris), nor a fresh connection that sends nothing. Here every request's head must arrive within
`guard.header_timeout_s` of its first byte (or of the connection, for the first request) and its
body within `guard.body_timeout_s` of the head; past either the connection is closed. Idle
keep-alive connections close after `guard.idle_timeout_s` (uvicorn's own timer). The deadlines are
timers on the event loop, so idle connections cost no work and do not slow the others.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.guard_settings import GuardSettings
from shared.logs import get_logger

log = get_logger("ingress.server")


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines for the request head and body."""

    header_timeout_s = 10.0
    body_timeout_s = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    @classmethod
    def configured(cls, settings: GuardSettings) -> type[GuardedHttp]:
        return type(
            "GuardedHttp",
            (cls,),
            {"header_timeout_s": settings.header_timeout_s, "body_timeout_s": settings.body_timeout_s},
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm(self.header_timeout_s)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._arm(self.body_timeout_s)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()

    def _arm(self, timeout_s: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def raise_open_files_limit() -> int:
    """Let this process hold as many connections as the system allows: at the usual soft limit of
    1,024 descriptors, a thousand idle connections would leave none for the next client."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65_536)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("open files limit not raised", soft=soft, hard=hard, error=repr(exc))
    return soft
