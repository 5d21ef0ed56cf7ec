"""The SMPP adapter's pieces without a network: texts to submit_sm bodies, statuses to outcomes, the
window, the settings of an smpp site, and the simulated SMSC's reading of what the adapter writes."""

from __future__ import annotations

import time

import pytest

from ingress.segments import count_segments
from shared.errors import ConfigError, ValidationFailed
from shared.model import Job, Outcome
from shared.settings import LongMessages, PlatformKind, load_settings
from shared.smpp import TLV_MESSAGE_PAYLOAD, TLV_RELAY_MESSAGE_ID, CommandStatus, Pdu, status_name
from simulator.smsc.faults import SmscFaultMode, parse_smsc_fault
from simulator.smsc.pdu import parse_submit, split_udh
from simulator.smsc.session import decode_text
from workers.platforms.factory import make_platform
from workers.platforms.smpp import SmppPlatform, classify_status
from workers.platforms.smpp_link import SmppLink, Window
from workers.platforms.smpp_text import address, encode_text, relative_validity, split

NOW = 1_700_000_000.0


def job(body: str, *, encoding: str = "gsm7", to: str = "+31612345678", sender: str = "Bank") -> Job:
    return Job(
        id="0123456789abcdef0123456789abcdef",
        tenant="t",
        to=to,
        sender=sender,
        body=body,
        encoding=encoding,
        expires_at=NOW + 90_000,
    )


def adapter(long_messages: LongMessages = LongMessages.UDH) -> SmppPlatform:
    link = SmppLink(
        host="127.0.0.1",
        port=1,
        system_id="x",
        password="y",
        timeout_s=1,
        window=4,
        enquire_link_interval_s=30,
    )
    return SmppPlatform(link=link, long_messages=long_messages)


@pytest.mark.parametrize(
    ("text", "encoding", "sizes"),
    [
        ("a" * 160, "gsm7", [160]),
        ("a" * 161, "gsm7", [153, 8]),
        ("€" * 80, "gsm7", [160]),  # escape pairs: two octets each
        ("a" * 152 + "€" + "a" * 10, "gsm7", [152, 12]),  # an escape pair is never cut
        ("П" * 70, "ucs2", [140]),
        ("П" * 71, "ucs2", [134, 8]),
        ("a" * 66 + "😀" + "a" * 4, "ucs2", [132, 12]),  # nor a surrogate pair (67 units would not fit it)
    ],
)
def test_segments_match_the_ingress_count(text: str, encoding: str, sizes: list[int]) -> None:
    assert [len(part) for part in split(encode_text(text, encoding))] == sizes
    assert count_segments(text).segments == len(sizes)


def test_a_character_the_gsm_codec_lacks_falls_back_to_ucs2() -> None:
    assert encode_text("a\x00", "gsm7").data_coding in (0, 8)  # either way, never an exception
    assert encode_text("中", "gsm7").data_coding == 8


@pytest.mark.parametrize(
    ("remaining_s", "expected"),
    [
        (59, "000000000100000R"),
        (3661, "000000010200000R"),
        (86_400, "000001000000000R"),
        (-5, "000000000100000R"),
    ],
)
def test_relative_validity_rounds_up_to_the_minute(remaining_s: float, expected: str) -> None:
    assert relative_validity(remaining_s) == expected


def test_addresses_are_international_numbers_or_alphanumeric() -> None:
    assert address("+31612345678") == (1, 1, "31612345678")
    assert address("Bank") == (5, 0, "Bank")


@pytest.mark.parametrize(
    ("text", "encoding", "parts"),
    [("hello {world}", "gsm7", 1), ("long € text " * 30, "gsm7", 3), ("Привет " * 30, "ucs2", 4)],
)
def test_the_simulated_smsc_reads_back_what_the_adapter_writes(text: str, encoding: str, parts: int) -> None:
    bodies = adapter().bodies(job(text, encoding=encoding), now=NOW)
    assert len(bodies) == parts
    submits = [parse_submit(body) for body in bodies]
    pieces = [split_udh(s, s.short_message) for s in submits]
    assert [p.number for p in pieces] == list(range(1, parts + 1))
    assert {p.total for p in pieces} == {parts}
    assert len({p.reference for p in pieces}) == 1
    decoded = "".join(decode_text(s.data_coding, p.payload) for s, p in zip(submits, pieces, strict=True))
    assert decoded == text
    first = submits[0]
    assert (first.source, first.destination, first.validity_period) == (
        "Bank",
        "31612345678",
        "000001010000000R",
    )
    assert first.tlvs[TLV_RELAY_MESSAGE_ID] == b"0123456789abcdef0123456789abcdef"


def test_message_payload_sends_one_submit_for_a_long_text() -> None:
    [body] = adapter(LongMessages.MESSAGE_PAYLOAD).bodies(job("x" * 400), now=NOW)
    submit = parse_submit(body)
    assert (submit.short_message, submit.esm_class) == (b"", 0)
    assert submit.tlvs[TLV_MESSAGE_PAYLOAD] == b"x" * 400


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (CommandStatus.ESME_RINVDSTADR, Outcome.REJECTED),
        (CommandStatus.ESME_RINVSRCADR, Outcome.REJECTED),
        (CommandStatus.ESME_RTHROTTLED, Outcome.UNAVAILABLE),
        (CommandStatus.ESME_RMSGQFUL, Outcome.UNAVAILABLE),
        (CommandStatus.ESME_RSYSERR, Outcome.UNAVAILABLE),
        (CommandStatus.ESME_RINVBNDSTS, Outcome.UNAVAILABLE),
        (0x0400, Outcome.UNAVAILABLE),  # a vendor's own status
    ],
)
def test_statuses_that_are_not_rok(status: int, outcome: Outcome) -> None:
    result = classify_status(status)
    assert result.outcome is outcome
    assert result.detail == status_name(status)


async def test_window_halves_on_throttling_and_grows_back_slowly() -> None:
    window = Window(8)
    window.slow_down()
    window.slow_down()
    assert window.limit == 2.0
    window.speed_up()
    assert window.limit == 2.5
    for _ in range(100):
        window.speed_up()
    assert window.limit == 8.0
    for _ in range(10):
        window.slow_down()
    assert window.limit == 1.0


def test_pdu_frame() -> None:
    assert (
        Pdu(0x80000004, 0x58, 7, b"id\x00").encode()
        == bytes.fromhex("00000013800000040000005800000007") + b"id\x00"
    )


def test_smsc_fault_parsing() -> None:
    assert parse_smsc_fault({"mode": "throttle", "share": 0.5}).mode is SmscFaultMode.THROTTLE
    with pytest.raises(ValidationFailed):
        parse_smsc_fault({"mode": "sideways"})
    with pytest.raises(ValidationFailed):
        parse_smsc_fault({"mode": "none", "latency_ms": 5})


def test_an_smpp_site_needs_its_smsc_and_no_url() -> None:
    site = {"platform": "smpp", "host": "127.0.0.1", "port": 2775, "system_id": "relay", "password": "pw"}
    settings = load_settings(sites={"a": site})
    assert settings.sites["a"].platform is PlatformKind.SMPP
    assert settings.sites["a"].endpoint == "smpp://127.0.0.1:2775"
    with pytest.raises(ConfigError, match="needs port, system_id"):
        load_settings(sites={"a": {"platform": "smpp", "host": "h", "password": "pw"}})
    with pytest.raises(ConfigError, match="has no url"):
        load_settings(sites={"a": {**site, "url": "http://x/"}})
    with pytest.raises(ConfigError, match="needs a url"):
        load_settings(sites={"a": {"platform": "kannel"}})


def test_job_validity_is_written_from_the_clock_given() -> None:
    body = adapter().bodies(job("hi"), now=time.time())[0]
    assert parse_submit(body).validity_period.endswith("R")


async def test_factory_builds_the_smpp_adapter_from_the_site() -> None:
    site = load_settings(
        sites={"a": {"platform": "smpp", "host": "127.0.0.1", "port": 1, "system_id": "r", "password": "p"}}
    ).sites["a"]
    platform = make_platform(site)
    assert isinstance(platform, SmppPlatform)
    assert platform.problem is None
    [result] = await platform.send([job("hi")])  # nothing listens on port 1
    assert result.outcome is Outcome.UNAVAILABLE
    assert platform.problem is not None and platform.problem.startswith("SMSC unreachable")
    await platform.aclose()
