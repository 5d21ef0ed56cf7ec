"""SMPP delivery receipts: which relay message and attempt a receipt is for, and the report it makes.

An SMSC names a message in its receipt by the id it answered the submit_sm with; the adapter remembers,
for each id it was given, the relay message and the attempt (in this process, the most recent
`REMEMBERED` ids). A receipt for an id not remembered (another worker's session, a restart between
submit and receipt, an id the SMSC never gave) is still reported, unmatched: the store keeps it and
counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from shared.model import DeliveryReport, ReportState
from shared.reports import ESM_RECEIPT, TLV_RECEIPTED_MESSAGE_ID, parse_receipt
from shared.settings import PlatformKind
from shared.smpp import CommandStatus, Cursor, Garbage, Pdu

REMEMBERED = 200_000
# A receipt can overtake its own submit_sm_resp on the way through this process (both arrive on one
# session; the receipt's handler may run before the submit's caller has read the id): wait that long.
MATCH_WAIT_S = 2.0

ReportSink = Callable[[DeliveryReport], Awaitable[None]]


class SubmittedIds:
    """The SMSC's message ids of recent submits, each with its relay message id and attempt."""

    def __init__(self, size: int = REMEMBERED) -> None:
        self._size = size
        self._ids: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._waiting: dict[str, asyncio.Event] = {}

    def remember(self, platform_id: str, message_id: str, attempt: int) -> None:
        self._ids[platform_id] = (message_id, attempt)
        self._ids.move_to_end(platform_id)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)
        waiting = self._waiting.pop(platform_id, None)
        if waiting is not None:
            waiting.set()

    async def find(self, platform_id: str, *, wait_s: float = MATCH_WAIT_S) -> tuple[str, int]:
        """The relay message and attempt of an SMSC id, waiting up to `wait_s` for a submit still being
        answered; ("", 0) when none is known."""
        if platform_id not in self._ids and wait_s > 0:
            event = self._waiting.setdefault(platform_id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await event.wait()
            self._waiting.pop(platform_id, None)
        return self._ids.get(platform_id, ("", 0))


def receipt_fields(body: bytes) -> tuple[int, str, dict[int, bytes]]:
    """esm_class, short_message as text and the optional parameters of a deliver_sm body."""
    cursor = Cursor(body)
    cursor.c_string()  # service_type
    cursor.octets(2)
    cursor.c_string()  # source_addr
    cursor.octets(2)
    cursor.c_string()  # destination_addr
    esm_class = cursor.octet()
    cursor.octets(2)  # protocol_id, priority_flag
    cursor.c_string()  # schedule_delivery_time
    cursor.c_string()  # validity_period
    cursor.octets(4)  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
    text = cursor.octets(cursor.octet()).decode("latin-1")
    return esm_class, text, cursor.tlvs()


class ReceiptReader:
    """Turns a deliver_sm into a report published through `sink`; its answer is the status of the
    deliver_sm_resp, ESME_ROK only once the report is durable, so an SMSC sends an unconfirmed one again."""

    def __init__(self, *, site: str, ids: SubmittedIds, sink: ReportSink) -> None:
        self._site = site
        self._ids = ids
        self._sink = sink

    async def on_deliver(self, pdu: Pdu) -> int:
        try:
            esm_class, text, tlvs = receipt_fields(pdu.body)
        except Garbage:
            return CommandStatus.ESME_ROK  # not readable as a receipt; nothing to keep
        if not esm_class & ESM_RECEIPT:
            return CommandStatus.ESME_ROK  # a message from a handset: the relay takes none
        receipt = parse_receipt(text)
        named = tlvs.get(TLV_RECEIPTED_MESSAGE_ID, b"").rstrip(b"\x00").decode("latin-1")
        platform_id = named or (receipt.platform_id if receipt is not None else "")
        message_id, attempt = await self._ids.find(platform_id) if platform_id else ("", 0)
        report = DeliveryReport(
            site=self._site,
            platform=PlatformKind.SMPP.value,
            message_id=message_id,
            attempt=attempt,
            state=receipt.state if receipt is not None else ReportState.PENDING,
            platform_status=receipt.stat if receipt is not None else "",
            error_code=receipt.err if receipt is not None else "",
            platform_id=platform_id,
            at=receipt.done_at if receipt is not None else None,
            raw=text,
        )
        try:
            await self._sink(report)
        except Exception:
            return CommandStatus.ESME_RX_T_APPN  # not durable: the SMSC must send it again
        return CommandStatus.ESME_ROK
