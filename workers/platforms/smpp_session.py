"""One bound SMPP 3.4 session with an SMSC, as a transceiver: requests matched to their responses by
sequence number, enquire_link when idle, the SMSC's own requests answered, a clean unbind."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable

from shared.logs import get_logger
from shared.smpp import (
    RESPONSE_BIT,
    CommandId,
    CommandStatus,
    Garbage,
    Pdu,
    c_string,
    read_pdu,
    status_name,
)

log = get_logger(__name__)

INTERFACE_VERSION = 0x34
UNBIND_WAIT_S = 1.0


class SessionError(Exception):
    """The session cannot carry this request."""


class NotSent(SessionError):
    """The request never left: the SMSC certainly does not have it."""


class AnswerLost(SessionError):
    """The request was written but its response did not come (timeout, or the connection died)."""


class BindRefused(SessionError):
    def __init__(self, status: int) -> None:
        super().__init__(f"bind refused: {status_name(status)}")
        self.status = status


DeliverHandler = Callable[[Pdu], Awaitable[int]]


class SmppSession:
    """Open with `bind()`; `request()` sends one PDU and waits for its response; `unbind()` ends it.

    A deliver_sm (a receipt, or a message from a handset) is answered at once with ESME_ROK, or, with an
    `on_deliver` handler, with the status the handler returns once it is done (a receipt made durable)."""

    def __init__(
        self,
        *,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        timeout_s: float,
        on_deliver: DeliverHandler | None = None,
    ) -> None:
        self._on_deliver = on_deliver
        self._delivering: set[asyncio.Task[None]] = set()
        self._reader = reader
        self._writer = writer
        self._timeout_s = timeout_s
        self._sequence = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Pdu]] = {}
        self._last_heard = asyncio.get_running_loop().time()
        self._reading: asyncio.Task[None] | None = None
        self.closed_because = ""

    @classmethod
    async def bind(
        cls,
        *,
        host: str,
        port: int,
        system_id: str,
        password: str,
        system_type: str,
        timeout_s: float,
        on_deliver: DeliverHandler | None = None,
    ) -> SmppSession:
        """A bound transceiver session; `NotSent` when the SMSC cannot be reached, `BindRefused` when it
        answers the bind with an error, `AnswerLost` when it does not answer it."""
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        except (OSError, TimeoutError) as exc:
            raise NotSent(f"cannot connect to {host}:{port}: {exc!r}") from None
        session = cls(reader=reader, writer=writer, timeout_s=timeout_s, on_deliver=on_deliver)
        session._reading = asyncio.create_task(session._read_loop(), name="smpp-read")
        body = (
            c_string(system_id)
            + c_string(password)
            + c_string(system_type)
            + bytes((INTERFACE_VERSION, 0, 0))  # interface_version, addr_ton, addr_npi
            + c_string("")  # address_range
        )
        try:
            answer = await session.request(CommandId.BIND_TRANSCEIVER, body)
        except SessionError:
            session.abort("bind not answered")
            raise
        if answer.status != CommandStatus.ESME_ROK:
            session.abort("bind refused")
            raise BindRefused(answer.status)
        return session

    @property
    def alive(self) -> bool:
        return not self.closed_because

    @property
    def idle_s(self) -> float:
        return asyncio.get_running_loop().time() - self._last_heard

    async def request(self, command_id: int, body: bytes = b"", *, timeout_s: float | None = None) -> Pdu:
        """Send one request and return its response PDU (whatever its status)."""
        if not self.alive:
            raise NotSent(f"session closed: {self.closed_because}")
        sequence = next(self._sequence)
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self._waiting[sequence] = future
        try:
            self._writer.write(Pdu(command_id, 0, sequence, body).encode())
            try:
                return await asyncio.wait_for(future, timeout_s or self._timeout_s)
            except TimeoutError:
                raise AnswerLost(f"no response within {timeout_s or self._timeout_s} s") from None
        finally:
            self._waiting.pop(sequence, None)

    async def enquire_link(self) -> None:
        await self.request(CommandId.ENQUIRE_LINK)

    async def unbind(self) -> None:
        """Say goodbye: unbind, wait briefly for unbind_resp, close."""
        if self.alive:
            with contextlib.suppress(SessionError):
                await self.request(CommandId.UNBIND, timeout_s=UNBIND_WAIT_S)
        self.abort("unbound")
        if self._reading is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading

    def abort(self, reason: str) -> None:
        """Close at once; every request still waiting loses its answer."""
        if not self.closed_because:
            self.closed_because = reason
        self._writer.transport.abort()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(AnswerLost(f"connection closed: {reason}"))
        if self._reading is not None and self._reading is not asyncio.current_task():
            self._reading.cancel()

    async def _read_loop(self) -> None:
        reason = "closed by the SMSC"
        try:
            while True:
                pdu = await read_pdu(self._reader)
                self._last_heard = asyncio.get_running_loop().time()
                if not self._on_pdu(pdu):
                    reason = "unbound by the SMSC"
                    break
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            reason = f"connection lost: {exc!r}"
        except Garbage as exc:
            reason = f"garbage from the SMSC: {exc}"
        self.abort(reason)

    def _on_pdu(self, pdu: Pdu) -> bool:
        """Handle one PDU from the SMSC; False when the session is over."""
        if pdu.command_id & RESPONSE_BIT:
            future = self._waiting.get(pdu.sequence)
            if future is not None and not future.done():
                future.set_result(pdu)
            elif pdu.command_id == CommandId.GENERIC_NACK and pdu.sequence == 0:
                log.warning("SMSC sent a generic_nack", status=status_name(pdu.status))
            return True
        if pdu.command_id == CommandId.UNBIND:
            self._respond(pdu)
            return False
        if pdu.command_id == CommandId.DELIVER_SM and self._on_deliver is not None:
            task = asyncio.create_task(self._deliver(pdu, self._on_deliver), name="smpp-deliver-sm")
            self._delivering.add(task)
            task.add_done_callback(self._delivering.discard)
            return True
        if pdu.command_id in (CommandId.ENQUIRE_LINK, CommandId.DELIVER_SM):
            self._respond(pdu, b"\x00" if pdu.command_id == CommandId.DELIVER_SM else b"")
            return True
        self._writer.write(Pdu(CommandId.GENERIC_NACK, CommandStatus.ESME_RINVCMDID, pdu.sequence).encode())
        return True

    async def _deliver(self, pdu: Pdu, handler: DeliverHandler) -> None:
        try:
            status = await handler(pdu)
        except Exception:
            log.exception("deliver_sm handler failed")
            status = CommandStatus.ESME_RX_T_APPN
        if self.alive:
            self._respond(pdu, b"\x00", status=status)

    def _respond(self, request: Pdu, body: bytes = b"", *, status: int = CommandStatus.ESME_ROK) -> None:
        self._writer.write(Pdu(request.command_id | RESPONSE_BIT, status, request.sequence, body).encode())
