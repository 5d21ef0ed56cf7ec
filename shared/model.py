"""The relay's domain: a message (job), the outcome of one attempt, and a message's status."""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from enum import StrEnum


class Outcome(StrEnum):
    """How one delivery attempt ended, as a platform adapter classifies it."""

    ACCEPTED = "accepted"  # the platform took it
    REJECTED = "rejected"  # the platform refused it for good
    UNAVAILABLE = "unavailable"  # the platform certainly did not receive it
    AMBIGUOUS = "ambiguous"  # sent, no answer: the platform may have it (a duplicate can follow)
    EXPIRED = "expired"  # not attempted: past its validity


class Status(StrEnum):
    ACCEPTED = "accepted"  # durable at the relay, not yet sent
    RETRYING = "retrying"
    # The relay's job is done: a platform took it. A delivery report may still move it on.
    SENT = "sent"
    DELIVERED = "delivered"  # terminal: the network reports the handset received it
    UNDELIVERED = "undelivered"  # terminal: the network reports it failed for good
    REJECTED = "rejected"  # terminal: a platform refused it for good
    EXPIRED = "expired"  # terminal: validity ran out before a platform took it
    DEAD = "dead"  # terminal: attempts exhausted

    @property
    def terminal(self) -> bool:
        """The relay's part is over (`sent` included: only a report can move it on)."""
        return self in TERMINAL


TERMINAL = frozenset(
    {Status.SENT, Status.DELIVERED, Status.UNDELIVERED, Status.REJECTED, Status.EXPIRED, Status.DEAD}
)
# What a platform's delivery report may make of a message; the relay itself never sets these.
REPORTED = frozenset({Status.DELIVERED, Status.UNDELIVERED})


class DeadReason(StrEnum):
    REJECTED = "rejected"
    EXPIRED = "expired"
    ATTEMPTS_EXHAUSTED = "attempts-exhausted"
    MALFORMED = "malformed"
    # The broker redelivered it `broker.delivery_limit` times without an outcome and parked it.
    REDELIVERY_LIMIT = "redelivery-limit"


class _RandomIds:
    """128-bit ids from the OS's randomness, read 4 KiB at a time: one `getrandom` call per id was a
    measurable share of a submit's CPU. The buffer is dropped in a forked child, which must never hand
    out the ids its parent will."""

    READ_BYTES = 4096
    ID_BYTES = 16

    def __init__(self) -> None:
        self._hex = ""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._hex, self._at = "", 0

    def take(self, count: int) -> list[str]:
        chars = 2 * self.ID_BYTES
        if self._at + count * chars > len(self._hex):
            self._hex = os.urandom(max(self.READ_BYTES, count * self.ID_BYTES)).hex()
            self._at = 0
        start, self._at = self._at, self._at + count * chars
        return [self._hex[i : i + chars] for i in range(start, self._at, chars)]


_random_ids = _RandomIds()


def new_message_ids(count: int) -> list[str]:
    """`count` random 128-bit ids of 32 hex digits."""
    return _random_ids.take(count)


def new_message_id() -> str:
    return _random_ids.take(1)[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One accepted SMS as it travels through the broker; everything a worker needs to deliver it."""

    id: str
    tenant: str
    to: str  # E.164
    sender: str
    body: str
    reference: str | None = None  # the client's own reference, passed through
    accepted_at: float = field(default_factory=time.time)
    expires_at: float = 0.0
    segments: int = 1
    encoding: str = "gsm7"
    # Where the customer wants its status changes POSTed (checked at submit); None: the tenant's default.
    callback_url: str | None = None

    def expired(self, now: float | None = None) -> bool:
        return (now if now is not None else time.time()) >= self.expires_at


@dataclass(frozen=True, slots=True, kw_only=True)
class AttemptRecord:
    """One attempt (or a final decision) as a worker reports it to the store."""

    message_id: str
    site: str
    attempt: int
    outcome: Outcome
    detail: str = ""
    at: float = field(default_factory=time.time)
    latency_ms: float | None = None
    worker: str = ""
    status: Status | None = None  # the message's status after this attempt, when it changed
    # The job may have reached a platform before this attempt (a redelivery after a worker or broker
    # node died, or a publish repeated because its confirm never came): this send may be a second copy.
    possible_duplicate: bool = False
    # The job itself, so the store can show the message in full even when its submit row never got
    # written (an ingress killed with rows still pending).
    job: Job | None = None

    @property
    def marks_duplicate(self) -> bool:
        """The platform may hold this message twice because of this attempt."""
        return self.possible_duplicate or self.outcome is Outcome.AMBIGUOUS


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    """A worker's state, sent every few seconds to the heartbeat exchange (transient, not stored)."""

    worker: str  # "<host>:<pid>"
    host: str
    pid: int
    site: str
    circuit: CircuitState
    concurrency: int
    in_flight: int  # jobs held (unacked) right now, own and standby queues
    delivered_total: int  # since the process started
    failed_over_total: int  # jobs handed to another site since start
    metrics_port: int
    started_at: float
    at: float = field(default_factory=time.time)
    # Why the site's platform cannot take traffic, as its adapter knows it ("authentication failed").
    problem: str | None = None


class ReportState(StrEnum):
    """What a platform's delivery report says, in the relay's words."""

    DELIVERED = "delivered"  # the handset has it
    UNDELIVERED = "undelivered"  # the network gave up on it
    SENT = "sent"  # the SMSC (behind the platform) took it: what the attempt already said
    PENDING = "pending"  # buffered or en route: nothing final yet

    @property
    def status(self) -> Status | None:
        """The message status this report moves a message to (never down: see the store's fold)."""
        return _STATUS_OF_REPORT.get(self)


_STATUS_OF_REPORT = {
    ReportState.DELIVERED: Status.DELIVERED,
    ReportState.UNDELIVERED: Status.UNDELIVERED,
    ReportState.SENT: Status.SENT,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryReport:
    """One delivery report from a site's platform, as the relay keeps it.

    `message_id` and `attempt` come from what the relay gave the platform with that attempt (the report
    URL, or the id the platform answered the submit with), never from the order reports arrive in; an
    empty `message_id` means the report names nothing the relay can match: it is kept as unmatched."""

    site: str
    platform: str  # the platform kind that reported ("kannel", "jasmin", "smpp", "http-json")
    message_id: str
    attempt: int  # 0: not known
    state: ReportState
    platform_status: str = ""  # the platform's own word: "DELIVRD", "8", "ESME_ROK"
    error_code: str = ""
    platform_id: str = ""  # the platform's id of the message
    at: float | None = None  # when the platform says it happened
    received_at: float = field(default_factory=time.time)
    raw: str = ""  # the report as it came (query, form or receipt text), for operators

    @property
    def key(self) -> str:
        """Identifies the report however often it is sent: a platform repeating it (Jasmin until it is
        answered, a duplicate) sends the same bytes."""
        digest = hashlib.sha256(f"{self.site}\n{self.platform}\n{self.message_id}\n{self.raw}".encode())
        return digest.hexdigest()
