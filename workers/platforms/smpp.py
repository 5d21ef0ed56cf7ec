"""Adapter of an SMSC over SMPP 3.4: one bound transceiver session, a window of outstanding submit_sm.

Outcomes: ESME_ROK accepted (the SMSC's message_id goes into the attempt's detail, against the relay's
id); ESME_RTHROTTLED and ESME_RMSGQFUL shrink the window and the submit is tried again after a pause,
then counted unavailable; a refused bind or a lost connection before sending is unavailable; an invalid
address or text is rejected; a submit_sm whose response does not come is ambiguous.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from shared.logs import get_logger
from shared.model import Job, Outcome
from shared.settings import LongMessages
from shared.smpp import (
    ESM_UDHI,
    TLV_MESSAGE_PAYLOAD,
    TLV_RELAY_MESSAGE_ID,
    CommandStatus,
    Cursor,
    Garbage,
    c_string,
    status_name,
    tlv,
)
from workers.platforms.base import Result, attempt_of
from workers.platforms.smpp_link import SmppLink
from workers.platforms.smpp_receipts import ReceiptReader, ReportSink, SubmittedIds
from workers.platforms.smpp_session import AnswerLost, SessionError
from workers.platforms.smpp_text import (
    address,
    encode_text,
    next_reference,
    relative_validity,
    split,
    with_udh,
)

log = get_logger(__name__)

_REJECTING = frozenset(
    {
        CommandStatus.ESME_RINVMSGLEN,
        CommandStatus.ESME_RINVSRCADR,
        CommandStatus.ESME_RINVDSTADR,
        CommandStatus.ESME_RINVESMCLASS,
        CommandStatus.ESME_RINVSRCTON,
        CommandStatus.ESME_RINVSRCNPI,
        CommandStatus.ESME_RINVDSTTON,
        CommandStatus.ESME_RINVDSTNPI,
        CommandStatus.ESME_RX_P_APPN,
        CommandStatus.ESME_RX_R_APPN,
    }
)
_THROTTLING = frozenset({CommandStatus.ESME_RTHROTTLED, CommandStatus.ESME_RMSGQFUL})
THROTTLE_RETRIES = 3
THROTTLE_PAUSE_S = 0.2


class SmppPlatform:
    """Sends each job as one submit_sm (or one per segment, joined by a UDH) over a shared session."""

    max_batch = 1

    def __init__(
        self,
        *,
        link: SmppLink,
        long_messages: LongMessages = LongMessages.UDH,
        receipts: bool = False,
    ) -> None:
        self._link = link
        self._long_messages = long_messages
        self._registered_delivery = 1 if receipts else 0  # SMSC delivery receipt on success or failure
        self._ids = SubmittedIds()

    def report_to(self, *, site: str, sink: ReportSink) -> None:
        """Read receipts on the session and publish them through `sink` (confirmed) before answering."""
        if self._registered_delivery:
            self._link.on_deliver = ReceiptReader(site=site, ids=self._ids, sink=sink).on_deliver

    @property
    def problem(self) -> str | None:
        """Why the site cannot take traffic now (a refused bind, an unreachable SMSC), if it cannot."""
        return self._link.problem

    async def send(self, jobs: Sequence[Job], *, attempts: Sequence[int] = ()) -> list[Result]:
        return list(
            await asyncio.gather(
                *(self._send_one(job, attempt_of(attempts, i)) for i, job in enumerate(jobs))
            )
        )

    async def aclose(self) -> None:
        await self._link.close()

    def bodies(self, job: Job, *, now: float | None = None) -> list[bytes]:
        """The submit_sm bodies of one job, in order."""
        encoded = encode_text(job.body, job.encoding)
        if self._long_messages is LongMessages.MESSAGE_PAYLOAD:
            payloads = [encoded.payload()]
            esm_class = 0
        else:
            parts = split(encoded)
            payloads = parts if len(parts) == 1 else list(with_udh(parts, next_reference()))
            esm_class = 0 if len(parts) == 1 else ESM_UDHI
        source_ton, source_npi, source = address(job.sender)
        dest_ton, dest_npi, destination = address(job.to)
        validity = ""
        if job.expires_at > 0:
            validity = relative_validity(job.expires_at - (now if now is not None else time.time()))
        head = (
            c_string("")  # service_type
            + bytes((source_ton, source_npi))
            + c_string(source)
            + bytes((dest_ton, dest_npi))
            + c_string(destination)
            + bytes((esm_class, 0, 0))  # esm_class, protocol_id, priority_flag
            + c_string("")  # schedule_delivery_time
            + c_string(validity)
            # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
            + bytes((self._registered_delivery, 0, encoded.data_coding, 0))
        )
        reference = tlv(TLV_RELAY_MESSAGE_ID, job.id.encode("ascii"))
        if self._long_messages is LongMessages.MESSAGE_PAYLOAD and len(split(encoded)) > 1:
            return [head + b"\x00" + tlv(TLV_MESSAGE_PAYLOAD, payloads[0]) + reference]
        return [head + bytes((len(payload),)) + payload + reference for payload in payloads]

    async def _send_one(self, job: Job, attempt: int) -> Result:
        message_ids: list[str] = []
        bodies = self.bodies(job)
        for number, body in enumerate(bodies, start=1):
            result = await self._submit(body)
            if isinstance(result, str):
                message_ids.append(result)
                if result:
                    self._ids.remember(result, job.id, attempt)
                continue
            if message_ids:
                # Earlier parts are with the SMSC: whatever happens now, the phone may show some of it.
                detail = f"part {number} of {len(bodies)}: {result.detail}"
                outcome = Outcome.REJECTED if result.outcome is Outcome.REJECTED else Outcome.AMBIGUOUS
                return Result(outcome=outcome, detail=detail)
            return result
        return Result(outcome=Outcome.ACCEPTED, detail="message_id " + ",".join(message_ids))

    async def _submit(self, body: bytes) -> str | Result:
        """The SMSC's message_id, or the Result of a submit it did not take."""
        pause_s = THROTTLE_PAUSE_S
        for attempt in range(THROTTLE_RETRIES + 1):
            try:
                answer = await self._link.submit(body)
            except AnswerLost as exc:
                return Result(outcome=Outcome.AMBIGUOUS, detail=f"answer lost: {exc}")
            except SessionError as exc:
                return Result(outcome=Outcome.UNAVAILABLE, detail=f"not sent: {exc}")
            status = answer.status
            if status == CommandStatus.ESME_ROK:
                try:
                    return Cursor(answer.body).c_string() if answer.body else ""
                except Garbage:
                    return ""  # taken; only its id is unreadable
            if status not in _THROTTLING or attempt == THROTTLE_RETRIES:
                break
            await asyncio.sleep(pause_s)
            pause_s *= 2
        return classify_status(answer.status)


def classify_status(status: int) -> Result:
    """A submit_sm_resp that is not ESME_ROK: the SMSC did not take the message."""
    name = status_name(status)
    if status in _REJECTING:
        return Result(outcome=Outcome.REJECTED, detail=name)
    # Throttling past the retries, a full queue, a system error, a bind the SMSC no longer knows, any
    # vendor status: not taken now, may be taken later or elsewhere.
    return Result(outcome=Outcome.UNAVAILABLE, detail=name)
