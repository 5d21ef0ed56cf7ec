"""Keeps one SMPP session bound for a worker: binds on first use, again with backoff after a loss or a
refusal, checks an idle session with enquire_link, and holds the window of outstanding submit_sm."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from shared.logs import get_logger
from shared.smpp import CommandId, CommandStatus, Pdu
from workers.platforms.smpp_session import BindRefused, DeliverHandler, NotSent, SessionError, SmppSession

log = get_logger(__name__)

FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
_AUTHENTICATION = frozenset({CommandStatus.ESME_RINVPASWD, CommandStatus.ESME_RINVSYSID})
_SLOWING = frozenset({CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RMSGQFUL})


class Window:
    """Outstanding submit_sm, at most `limit`: halved when the SMSC asks to slow down, grown back by one
    per window's worth of answers taken (additive increase, multiplicative decrease)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.limit = float(size)
        self.in_use = 0
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_use < int(self.limit))
            self.in_use += 1
        try:
            yield
        finally:
            async with self._changed:
                self.in_use -= 1
                self._changed.notify_all()

    def slow_down(self) -> None:
        self.limit = max(1.0, self.limit / 2)

    def speed_up(self) -> None:
        self.limit = min(float(self.size), self.limit + 1 / self.limit)


class SmppLink:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        system_id: str,
        password: str,
        system_type: str = "",
        timeout_s: float,
        window: int,
        enquire_link_interval_s: float,
    ) -> None:
        self._host = host
        self._port = port
        self._system_id = system_id
        self._password = password
        self._system_type = system_type
        self._timeout_s = timeout_s
        self._enquire_link_interval_s = enquire_link_interval_s
        self.window = Window(window)
        self._session: SmppSession | None = None
        self._binding = asyncio.Lock()
        self._backoff_s = 0.0
        self._next_bind_at = 0.0
        self._keepalive: asyncio.Task[None] | None = None
        self.problem: str | None = None
        self.on_deliver: DeliverHandler | None = None  # receipts, once the worker can publish them

    async def submit(self, body: bytes) -> Pdu:
        """The submit_sm_resp; `NotSent` when no session could be had, `AnswerLost` when it did not come."""
        async with self.window.slot():
            session = await self._bound()
            answer = await session.request(CommandId.SUBMIT_SM, body)
        if answer.status in _SLOWING:
            self.window.slow_down()
        else:
            self.window.speed_up()
        return answer

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
        if self._session is not None:
            await self._session.unbind()

    async def _bound(self) -> SmppSession:
        session = self._session
        if session is not None and session.alive:
            return session
        async with self._binding:
            if self._session is not None and self._session.alive:
                return self._session
            loop = asyncio.get_running_loop()
            wait_s = self._next_bind_at - loop.time()
            if wait_s > 0:
                raise NotSent(f"not bound ({self.problem}); next bind in {wait_s:.1f} s")
            try:
                self._session = await SmppSession.bind(
                    host=self._host,
                    port=self._port,
                    system_id=self._system_id,
                    password=self._password,
                    system_type=self._system_type,
                    timeout_s=self._timeout_s,
                    on_deliver=self.on_deliver,
                )
            except SessionError as exc:
                self._failed_bind(exc, now=loop.time())
                raise NotSent(f"not bound: {exc}") from None
            log.info("SMPP session bound", host=self._host, port=self._port, system_id=self._system_id)
            self._backoff_s, self.problem = 0.0, None
            if self._keepalive is None or self._keepalive.done():
                self._keepalive = asyncio.create_task(self._keep_alive(), name="smpp-enquire-link")
            return self._session

    def _failed_bind(self, exc: SessionError, *, now: float) -> None:
        if isinstance(exc, BindRefused) and exc.status in _AUTHENTICATION:
            self.problem = "authentication failed"
        elif isinstance(exc, BindRefused):
            self.problem = str(exc)
        else:
            self.problem = f"SMSC unreachable: {exc}"
        self._backoff_s = min(MAX_BACKOFF_S, max(FIRST_BACKOFF_S, self._backoff_s * 2))
        self._next_bind_at = now + self._backoff_s
        log.warning("SMPP bind failed", problem=self.problem, retry_in_s=self._backoff_s)

    async def _keep_alive(self) -> None:
        """enquire_link on a session idle for the interval; a session that does not answer is dropped, so
        the next submit binds anew instead of waiting on a dead peer."""
        tick_s = min(1.0, self._enquire_link_interval_s / 2)
        while True:
            await asyncio.sleep(tick_s)
            session = self._session
            if session is None or not session.alive or session.idle_s < self._enquire_link_interval_s:
                continue
            try:
                await session.enquire_link()
            except SessionError:
                session.abort("enquire_link not answered")
                log.warning("SMPP session dropped: enquire_link not answered", host=self._host)
