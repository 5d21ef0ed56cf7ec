"""The simulated SMSC's delivery receipts: a deliver_sm with the receipt bit of esm_class, sent on the
session that submitted the message, as the report plan (`simulator.reports`) says. A receipt the ESME
answers with an error status is sent again after `RESEND_AFTER_S`, up to `RESENDS` times, as an SMSC
does."""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import Callable

from shared.reports import ESM_RECEIPT, TLV_MESSAGE_STATE, TLV_RECEIPTED_MESSAGE_ID, receipt_text
from shared.smpp import CommandId, CommandStatus, Pdu, c_string, tlv
from simulator.reports import ReportOutcome, ReportSwitch

RESEND_AFTER_S = 1.0
RESENDS = 5
MESSAGE_STATE_DELIVERED = 2
MESSAGE_STATE_UNDELIVERABLE = 5
_unknown_ids = itertools.count(0xF000_0000)


def deliver_sm_body(*, handset: str, sender: str, platform_id: str, delivered: bool) -> bytes:
    text = receipt_text(
        platform_id=platform_id, stat="DELIVRD" if delivered else "UNDELIV", err="000" if delivered else "001"
    ).encode("latin-1")
    state = MESSAGE_STATE_DELIVERED if delivered else MESSAGE_STATE_UNDELIVERABLE
    return (
        c_string("")  # service_type
        + bytes((1, 1))
        + c_string(handset)
        + bytes((5, 0))
        + c_string(sender)
        + bytes((ESM_RECEIPT, 0, 0))  # esm_class, protocol_id, priority_flag
        + c_string("")
        + c_string("")
        + bytes((0, 0, 0, 0))  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
        + bytes((len(text),))
        + text
        + tlv(TLV_RECEIPTED_MESSAGE_ID, c_string(platform_id))
        + tlv(TLV_MESSAGE_STATE, struct.pack(">B", state))
    )


class ReceiptSender:
    """Sends one session's receipts and re-sends those answered with an error."""

    def __init__(
        self, *, switch: ReportSwitch, send: Callable[[Pdu], None], sequence: itertools.count[int]
    ) -> None:
        self._switch = switch
        self._send = send
        self._sequence = sequence
        self._waiting: dict[int, tuple[bytes, int]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(self, *, handset: str, sender: str, platform_id: str) -> None:
        copies = self._switch.copies()
        if not copies:
            return
        plan = self._switch.plan
        delivered = plan.outcome is ReportOutcome.DELIVERED
        bodies = [
            deliver_sm_body(handset=handset, sender=sender, platform_id=platform_id, delivered=delivered)
        ]
        bodies *= copies
        if plan.unknown:
            stray = f"{next(_unknown_ids):08x}"
            bodies.append(
                deliver_sm_body(handset=handset, sender=sender, platform_id=stray, delivered=delivered)
            )
        self._spawn(self._later(bodies, plan.delay_ms / 1000))

    def answered(self, pdu: Pdu) -> None:
        """A deliver_sm_resp: done, or sent again later if the ESME could not take the receipt."""
        body, tries = self._waiting.pop(pdu.sequence, (b"", 0))
        if not body:
            return
        if pdu.status == CommandStatus.ESME_ROK:
            self._switch.sent += 1
        elif tries < RESENDS:
            self._switch.failed += 1
            self._spawn(self._later([body], RESEND_AFTER_S, tries=tries + 1))

    def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coroutine) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _later(self, bodies: list[bytes], delay_s: float, *, tries: int = 0) -> None:
        if delay_s:
            await asyncio.sleep(delay_s)
        for body in bodies:
            sequence = next(self._sequence)
            self._waiting[sequence] = (body, tries)
            self._send(Pdu(CommandId.DELIVER_SM, 0, sequence, body))
