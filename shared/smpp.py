"""SMPP 3.4 as both ends of the relay's SMPP traffic speak it: the PDU frame, C-strings, TLVs, and the
command ids, command statuses and codings (the specification's names).

The worker's adapter talks to SMSCs with it and the simulated SMSC answers with it; Jasmin's SMPP server
checks both against an implementation that is not the relay's.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from enum import IntEnum

HEADER_BYTES = 16
MAX_PDU_BYTES = 64 * 1024  # far above any PDU the relay sends or takes; a longer length is garbage
MAX_SHORT_MESSAGE_BYTES = 140  # one segment's octets in short_message
RESPONSE_BIT = 0x8000_0000

# data_coding: the SMSC default alphabet (GSM 03.38, one septet per octet) and UCS-2 (UTF-16BE).
CODING_DEFAULT = 0
CODING_UCS2 = 8
# esm_class bit: short_message starts with a user data header (concatenation).
ESM_UDHI = 0x40
# Optional parameters the relay uses.
TLV_MESSAGE_PAYLOAD = 0x0424
# Vendor-specific range (0x1400-0x3FFF): the relay's message id rides here; an SMSC ignores a tag it does
# not support (SMPP 3.4, 3.2.3).
TLV_RELAY_MESSAGE_ID = 0x1400


class CommandId(IntEnum):
    GENERIC_NACK = 0x8000_0000
    BIND_RECEIVER = 0x0000_0001
    BIND_TRANSMITTER = 0x0000_0002
    SUBMIT_SM = 0x0000_0004
    DELIVER_SM = 0x0000_0005
    UNBIND = 0x0000_0006
    BIND_TRANSCEIVER = 0x0000_0009
    ENQUIRE_LINK = 0x0000_0015

    @property
    def response(self) -> int:
        return int(self) | RESPONSE_BIT


BINDS = frozenset({CommandId.BIND_RECEIVER, CommandId.BIND_TRANSMITTER, CommandId.BIND_TRANSCEIVER})


class CommandStatus(IntEnum):
    ESME_ROK = 0x00
    ESME_RINVMSGLEN = 0x01
    ESME_RINVCMDLEN = 0x02
    ESME_RINVCMDID = 0x03
    ESME_RINVBNDSTS = 0x04
    ESME_RALYBND = 0x05
    ESME_RINVPRTFLG = 0x06
    ESME_RINVREGDLVFLG = 0x07
    ESME_RSYSERR = 0x08
    ESME_RINVSRCADR = 0x0A
    ESME_RINVDSTADR = 0x0B
    ESME_RINVMSGID = 0x0C
    ESME_RBINDFAIL = 0x0D
    ESME_RINVPASWD = 0x0E
    ESME_RINVSYSID = 0x0F
    ESME_RMSGQFUL = 0x14
    ESME_RINVSERTYP = 0x15
    ESME_RINVESMCLASS = 0x43
    ESME_RSUBMITFAIL = 0x45
    ESME_RINVSRCTON = 0x48
    ESME_RINVSRCNPI = 0x49
    ESME_RINVDSTTON = 0x50
    ESME_RINVDSTNPI = 0x51
    ESME_RINVSYSTYP = 0x53
    ESME_RTHROTTLED = 0x58
    ESME_RINVSCHED = 0x61
    ESME_RINVEXPIRY = 0x62
    ESME_RX_T_APPN = 0x64
    ESME_RX_P_APPN = 0x65
    ESME_RX_R_APPN = 0x66
    ESME_ROPTPARNOTALLWD = 0xC1
    ESME_RINVPARLEN = 0xC2
    ESME_RUNKNOWNERR = 0xFF


def status_name(status: int) -> str:
    """`ESME_RTHROTTLED (0x58)`, or the bare number for a vendor's own status."""
    try:
        return f"{CommandStatus(status).name} (0x{status:02X})"
    except ValueError:
        return f"status 0x{status:08X}"


_HEADER = struct.Struct(">IIII")
_TLV = struct.Struct(">HH")


class Garbage(Exception):
    """Bytes that are not an SMPP PDU: the session cannot go on."""


@dataclass(frozen=True, slots=True)
class Pdu:
    command_id: int
    status: int
    sequence: int
    body: bytes = b""

    def encode(self) -> bytes:
        header = _HEADER.pack(HEADER_BYTES + len(self.body), self.command_id, self.status, self.sequence)
        return header + self.body


async def read_pdu(reader: asyncio.StreamReader) -> Pdu:
    """The next PDU; `asyncio.IncompleteReadError` at the end of the stream, `Garbage` for nonsense."""
    header = await reader.readexactly(HEADER_BYTES)
    length, command_id, status, sequence = _HEADER.unpack(header)
    if not HEADER_BYTES <= length <= MAX_PDU_BYTES:
        raise Garbage(f"command_length {length}")
    return Pdu(command_id, status, sequence, await reader.readexactly(length - HEADER_BYTES))


def c_string(value: str) -> bytes:
    return value.encode("latin-1") + b"\x00"


def tlv(tag: int, value: bytes) -> bytes:
    return _TLV.pack(tag, len(value)) + value


class Cursor:
    """Reads a PDU body field by field; `Garbage` when it ends too soon."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.at = 0

    def c_string(self) -> str:
        end = self._data.find(b"\x00", self.at)
        if end < 0:
            raise Garbage("unterminated C-string")
        value, self.at = self._data[self.at : end], end + 1
        return value.decode("latin-1")

    def octet(self) -> int:
        return self.octets(1)[0]

    def octets(self, count: int) -> bytes:
        if self.at + count > len(self._data):
            raise Garbage("body too short")
        self.at += count
        return self._data[self.at - count : self.at]

    def tlvs(self) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        while self.at < len(self._data):
            tag, length = _TLV.unpack(self.octets(_TLV.size))
            found[tag] = self.octets(length)
        return found
