"""A callback job as it travels through the broker, and the JSON body the customer receives.

The job carries what the body needs and where it goes; never the signing secret, which the callback
worker reads from the store when it signs (so a rotation applies to callbacks already queued).

A broker message holds one job (a retry, a replay) or a bundle of them (the callbacks of one recorder
fold): measured under the reports benchmark, a confirmed publish and an ack per callback were a large
part of the recorder's and the callback worker's CPU per message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from shared.errors import EnvelopeError

VERSION = 1


class CallbackDeadReason(StrEnum):
    ATTEMPTS_EXHAUSTED = "attempts-exhausted"  # every try failed (no answer, or not 2xx)
    ADDRESS_REFUSED = "address-refused"  # its host resolves where callbacks may not go (at send time)
    REDELIVERY_LIMIT = "redelivery-limit"  # the broker redelivered it past its limit without an outcome


@dataclass(frozen=True, slots=True, kw_only=True)
class CallbackJob:
    event_id: str  # the same for every copy of one status change: the customer's deduplication key
    tenant: str
    url: str
    message_id: str
    reference: str | None
    status: str
    site: str
    at: float  # when the status changed (epoch seconds)
    error_code: str | None = None
    error_text: str | None = None


_JOB: TypeAdapter[CallbackJob] = TypeAdapter(CallbackJob)
_JOBS: TypeAdapter[list[CallbackJob]] = TypeAdapter(list[CallbackJob])


def event_id(message_id: str, status: str) -> str:
    """A status is reached at most once by a message (statuses only rise), so the pair names the
    change: every recorder, and every repeat of a fold, gives one change one id."""
    return hashlib.sha256(f"{message_id}:{status}".encode()).hexdigest()[:32]


def encode_callback(job: CallbackJob) -> bytes:
    return orjson.dumps({"v": VERSION, "callback": job})


def encode_callbacks(jobs: Sequence[CallbackJob]) -> bytes:
    """One broker message for several jobs; a single job is encoded as `encode_callback` does."""
    if len(jobs) == 1:
        return encode_callback(jobs[0])
    return orjson.dumps({"v": VERSION, "callbacks": list(jobs)})


def decode_callback(body: bytes) -> CallbackJob:
    jobs = decode_callbacks(body)
    if len(jobs) != 1:
        raise EnvelopeError(f"a bundle of {len(jobs)} callbacks where one was expected")
    return jobs[0]


def decode_callbacks(body: bytes) -> list[CallbackJob]:
    """The jobs of a broker message, one or a bundle; `EnvelopeError` when it is not one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise EnvelopeError(f"not a version {VERSION} callback envelope")
    try:
        if "callback" in data:
            return [_JOB.validate_python(data["callback"])]
        if isinstance(data.get("callbacks"), list) and data["callbacks"]:
            return _JOBS.validate_python(data["callbacks"])
    except ValidationError as exc:
        raise EnvelopeError(f"malformed callback: {exc.errors()[:3]}") from None
    raise EnvelopeError(f"not a version {VERSION} callback envelope")


def callback_body(job: CallbackJob) -> bytes:
    """The JSON the customer's endpoint receives."""
    error: dict[str, Any] | None = None
    if job.error_code is not None:
        error = {"code": job.error_code, "text": job.error_text or ""}
    return orjson.dumps(
        {
            "id": job.message_id,
            "reference": job.reference,
            "status": job.status,
            "site": job.site,
            "at": datetime.fromtimestamp(job.at, UTC).isoformat(),
            "error": error,
            "event_id": job.event_id,
        }
    )
