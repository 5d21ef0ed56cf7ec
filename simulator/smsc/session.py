"""One ESME's session with the simulated SMSC: bind, enquire_link, submit_sm, unbind, under the fault."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import gsm0338  # noqa: F401  registers the "gsm03.38" codec

from shared.logs import get_logger
from shared.smpp import (
    BINDS,
    CODING_UCS2,
    RESPONSE_BIT,
    TLV_MESSAGE_PAYLOAD,
    TLV_RELAY_MESSAGE_ID,
    CommandId,
    CommandStatus,
    Garbage,
    Pdu,
    c_string,
    read_pdu,
)
from simulator.reports import ReportSwitch
from simulator.smsc.faults import SmscCounters, SmscFault, SmscFaultMode, TakenMessage
from simulator.smsc.pdu import Part, Submit, parse_bind, parse_submit, split_udh
from simulator.smsc.receipts import ReceiptSender

log = get_logger("relay.smsc_sim")

_NUMBER = re.compile(r"^\+?[1-9]\d{5,14}$")
_REFUSALS = {
    SmscFaultMode.THROTTLE: CommandStatus.ESME_RTHROTTLED,
    SmscFaultMode.QUEUE_FULL: CommandStatus.ESME_RMSGQFUL,
    SmscFaultMode.REJECT: CommandStatus.ESME_RINVDSTADR,
}
UNBIND_WAIT_S = 2.0


@dataclass(slots=True)
class SmscState:
    """What every session shares: the SMSC's identity, credentials, fault, counters and open parts."""

    system_id: str
    username: str | None
    password: str | None
    counters: SmscCounters = field(default_factory=SmscCounters)
    fault: SmscFault = field(default_factory=SmscFault)
    message_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    partial: dict[tuple[str, str, int, int], dict[int, Part]] = field(default_factory=dict)
    random: Callable[[], float] = random.random
    reports: ReportSwitch = field(default_factory=ReportSwitch)

    def credentials_status(self, system_id: str, password: str) -> CommandStatus:
        if self.username is not None and system_id != self.username:
            return CommandStatus.ESME_RINVSYSID
        if self.password is not None and password != self.password:
            return CommandStatus.ESME_RINVPASWD
        return CommandStatus.ESME_ROK


def decode_text(data_coding: int, payload: bytes) -> str:
    if data_coding == CODING_UCS2:
        return payload.decode("utf-16-be", errors="replace")
    if data_coding == 0:
        return payload.decode("gsm03.38", errors="replace")
    return payload.decode("latin-1")


class SmscSession:
    def __init__(
        self, *, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: SmscState
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._state = state
        self._bound = False
        self._sequence = itertools.count(1)
        self._closed = asyncio.Event()
        self._receipts = ReceiptSender(switch=state.reports, send=self._send, sequence=self._sequence)

    async def run(self) -> None:
        try:
            while not self._closed.is_set():
                pdu = await read_pdu(self._reader)
                self._dispatch(pdu)
        except (asyncio.IncompleteReadError, ConnectionError, Garbage) as exc:
            log.debug("session ended", reason=repr(exc))
        finally:
            self.cut()

    def cut(self) -> None:
        """Drop the connection without an unbind, as a crashed SMSC would."""
        self._closed.set()
        self._receipts.close()
        self._writer.transport.abort()

    async def unbind(self) -> None:
        """An SMSC-initiated unbind: send it, give the ESME a moment for its unbind_resp, then close."""
        if self._closed.is_set():
            return
        self._send(Pdu(CommandId.UNBIND, 0, next(self._sequence)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), UNBIND_WAIT_S)
        self.cut()

    def _send(self, pdu: Pdu) -> None:
        if not self._writer.is_closing():
            self._writer.write(pdu.encode())

    def _answer(self, request: Pdu, status: int, body: bytes = b"") -> None:
        self._send(Pdu(request.command_id | RESPONSE_BIT, status, request.sequence, body))

    def _dispatch(self, pdu: Pdu) -> None:
        command = pdu.command_id
        if command in BINDS:
            self._bind(pdu)
        elif command == CommandId.ENQUIRE_LINK:
            self._state.counters.enquire_links += 1
            self._answer(pdu, CommandStatus.ESME_ROK)
        elif command == CommandId.SUBMIT_SM:
            self._submit(pdu)
        elif command == CommandId.UNBIND:
            self._state.counters.unbinds_received += 1
            self._answer(pdu, CommandStatus.ESME_ROK)
            self._closed.set()
        elif command == CommandId.UNBIND.response:
            self._closed.set()
        elif command == CommandId.DELIVER_SM.response:
            self._receipts.answered(pdu)
        elif not command & RESPONSE_BIT:  # a response (deliver_sm_resp, ...) needs no answer
            self._send(Pdu(CommandId.GENERIC_NACK, CommandStatus.ESME_RINVCMDID, pdu.sequence))

    def _bind(self, pdu: Pdu) -> None:
        state = self._state
        if self._bound:
            status = CommandStatus.ESME_RALYBND
        elif state.fault.mode is SmscFaultMode.BIND_REFUSED:
            status = CommandStatus.ESME_RBINDFAIL
        else:
            bind = parse_bind(pdu.body)
            status = state.credentials_status(bind.system_id, bind.password)
        self._answer(pdu, status, c_string(state.system_id))
        if status is CommandStatus.ESME_ROK:
            self._bound = True
            state.counters.binds += 1

    def _submit(self, pdu: Pdu) -> None:
        state = self._state
        if not self._bound:
            self._answer(pdu, CommandStatus.ESME_RINVBNDSTS)
            return
        try:
            submit = parse_submit(pdu.body)
        except Garbage:
            self._answer(pdu, CommandStatus.ESME_RINVCMDLEN)
            return
        mode = state.fault.mode
        if mode is SmscFaultMode.NO_RESP:
            return
        refusal = _REFUSALS.get(mode)
        if refusal is not None and state.random() < state.fault.share:
            self._answer(pdu, refusal)
            return
        if not _NUMBER.match(submit.destination):
            self._answer(pdu, CommandStatus.ESME_RINVDSTADR)
            return
        if not submit.source:
            self._answer(pdu, CommandStatus.ESME_RINVSRCADR)
            return
        message_id = f"{next(state.message_ids):08x}"
        self._answer(pdu, CommandStatus.ESME_ROK, c_string(message_id))
        self._assemble(submit, message_id)
        if submit.registered_delivery & 1:
            self._receipts.schedule(handset=submit.destination, sender=submit.source, platform_id=message_id)

    def _assemble(self, submit: Submit, message_id: str) -> None:
        state = self._state
        part = split_udh(submit, submit.tlvs.get(TLV_MESSAGE_PAYLOAD, submit.short_message))
        if part.total > 1:
            key = (submit.source, submit.destination, part.reference, part.total)
            parts = state.partial.setdefault(key, {})
            parts[part.number] = part
            if len(parts) < part.total:
                return
            del state.partial[key]
            payload = b"".join(parts[number].payload for number in sorted(parts))
        else:
            payload = part.payload
        reference = submit.tlvs.get(TLV_RELAY_MESSAGE_ID, b"").decode("ascii", errors="replace") or message_id
        state.counters.take(
            TakenMessage(
                reference=reference,
                message_id=message_id,
                sender=submit.source,
                to=submit.destination,
                text=decode_text(submit.data_coding, payload),
                parts=part.total,
                data_coding=submit.data_coding,
                validity_period=submit.validity_period,
            )
        )
