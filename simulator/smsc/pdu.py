"""The bodies the simulated SMSC reads: bind, submit_sm, and a concatenation UDH."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.smpp import ESM_UDHI, Cursor

IEI_CONCAT_8BIT = 0x00
IEI_CONCAT_16BIT = 0x08


@dataclass(frozen=True, slots=True)
class Bind:
    system_id: str
    password: str
    system_type: str


def parse_bind(body: bytes) -> Bind:
    cursor = Cursor(body)
    return Bind(system_id=cursor.c_string(), password=cursor.c_string(), system_type=cursor.c_string())


@dataclass(frozen=True, slots=True)
class Submit:
    source: str
    destination: str
    esm_class: int
    registered_delivery: int
    validity_period: str
    data_coding: int
    short_message: bytes
    tlvs: dict[int, bytes] = field(default_factory=dict)


def parse_submit(body: bytes) -> Submit:
    cursor = Cursor(body)
    cursor.c_string()  # service_type
    cursor.octets(2)  # source_addr_ton, source_addr_npi
    source = cursor.c_string()
    cursor.octets(2)  # dest_addr_ton, dest_addr_npi
    destination = cursor.c_string()
    esm_class = cursor.octet()
    cursor.octets(2)  # protocol_id, priority_flag
    cursor.c_string()  # schedule_delivery_time
    validity_period = cursor.c_string()
    registered_delivery = cursor.octet()
    cursor.octet()  # replace_if_present_flag
    data_coding = cursor.octet()
    cursor.octet()  # sm_default_msg_id
    short_message = cursor.octets(cursor.octet())
    return Submit(
        source=source,
        destination=destination,
        esm_class=esm_class,
        registered_delivery=registered_delivery,
        validity_period=validity_period,
        data_coding=data_coding,
        short_message=short_message,
        tlvs=cursor.tlvs(),
    )


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a (possibly concatenated) message: its reference, count and place, and its payload."""

    reference: int
    total: int
    number: int
    payload: bytes


def split_udh(submit: Submit, payload: bytes) -> Part:
    """The concatenation information element of a UDH, if the submit carries one, and the text after it."""
    if not submit.esm_class & ESM_UDHI or not payload:
        return Part(reference=0, total=1, number=1, payload=payload)
    udh_length = payload[0]
    header, text = payload[1 : 1 + udh_length], payload[1 + udh_length :]
    at = 0
    while at + 2 <= len(header):
        iei, length = header[at], header[at + 1]
        value = header[at + 2 : at + 2 + length]
        if iei == IEI_CONCAT_8BIT and length == 3:
            return Part(reference=value[0], total=value[1], number=value[2], payload=text)
        if iei == IEI_CONCAT_16BIT and length == 4:
            return Part(reference=(value[0] << 8) | value[1], total=value[2], number=value[3], payload=text)
        at += 2 + length
    return Part(reference=0, total=1, number=1, payload=text)
