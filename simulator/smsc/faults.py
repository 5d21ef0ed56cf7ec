"""The simulated SMSC's fault switch and what it remembers of the messages it took."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.errors import ValidationFailed
from simulator.state import Counters

MESSAGES_KEPT = 10_000


class SmscFaultMode(StrEnum):
    NONE = "none"
    DOWN = "down"  # the port refuses connections; bound sessions are cut without an unbind
    BIND_REFUSED = "bind-refused"  # binds are answered ESME_RBINDFAIL; bound sessions are unbound
    NO_RESP = "no-resp"  # submit_sm is read and never answered (nothing is taken)
    THROTTLE = "throttle"  # a share of submit_sm is answered ESME_RTHROTTLED (nothing of it is taken)
    QUEUE_FULL = "queue-full"  # a share of submit_sm is answered ESME_RMSGQFUL (nothing of it is taken)
    REJECT = "reject"  # a share of submit_sm is answered ESME_RINVDSTADR (counted, refused for good)
    UNBIND = "unbind"  # on switching: every bound session gets an unbind; new binds are taken


@dataclass(frozen=True, slots=True, kw_only=True)
class SmscFault:
    mode: SmscFaultMode = SmscFaultMode.NONE
    share: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode.value, "share": self.share}


def parse_smsc_fault(data: object) -> SmscFault:
    """Read the body of POST /faults, or raise `ValidationFailed` naming each bad field."""
    if not isinstance(data, dict):
        raise ValidationFailed([{"field": "body", "message": "must be a JSON object"}])
    errors: list[dict[str, str]] = []
    unknown = set(data) - {"mode", "share"}
    if unknown:
        errors.append({"field": ",".join(sorted(unknown)), "message": "unknown field"})
    mode = SmscFaultMode.NONE
    try:
        mode = SmscFaultMode(str(data.get("mode")))
    except ValueError:
        errors.append({"field": "mode", "message": f"one of {', '.join(m.value for m in SmscFaultMode)}"})
    share = data.get("share", 1.0)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
        errors.append({"field": "share", "message": "a number from 0 to 1"})
    if errors:
        raise ValidationFailed(errors)
    return SmscFault(mode=mode, share=float(share))


@dataclass(frozen=True, slots=True, kw_only=True)
class TakenMessage:
    """A message the SMSC took whole (all its parts), its text decoded."""

    reference: str
    message_id: str
    sender: str
    to: str
    text: str
    parts: int
    data_coding: int
    validity_period: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "message_id": self.message_id,
            "from": self.sender,
            "to": self.to,
            "text": self.text,
            "parts": self.parts,
            "data_coding": self.data_coding,
            "validity_period": self.validity_period,
        }


class SmscCounters(Counters):
    """The HTTP simulator's counters (one per whole message, by reference), plus the messages themselves
    and what happened on the sessions."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: deque[TakenMessage] = deque(maxlen=MESSAGES_KEPT)
        self.binds = 0
        self.enquire_links = 0
        self.unbinds_received = 0

    def take(self, message: TakenMessage) -> None:
        self.record(message.reference, accepted=True)
        self.messages.append(message)

    def stats(self) -> dict[str, int]:
        return {
            **super().stats(),
            "binds": self.binds,
            "enquire_links": self.enquire_links,
            "unbinds_received": self.unbinds_received,
        }

    def reset(self) -> None:
        super().reset()
        self.messages.clear()
        self.binds = self.enquire_links = self.unbinds_received = 0
