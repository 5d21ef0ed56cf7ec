"""Wire format: versioned JSON bodies of jobs, events and dead letters.

A job message carries one job (`{"v": 1, "job": ...}`: retries, replays, the spool) or a bundle of jobs
that share one delivery state (`{"v": 1, "jobs": [...]}`: the ingress publishes the jobs of concurrent
submits for one site together, so the broker stores, delivers and acks them once).

Delivery state that must survive a worker (attempt count, sites tried) travels in AMQP headers, not in
the body, so a retry republishes the body untouched.

Across one version of skew (a rolling upgrade), readers ignore fields they do not know and fill the ones
they miss with their defaults; only a missing required field, or one of the wrong type, is malformed. The
jobs of a bundle are read one by one, so one unreadable job does not sink the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import orjson
from pydantic import TypeAdapter, ValidationError

from shared.errors import EnvelopeError
from shared.model import AttemptRecord, DeadReason, DeliveryReport, Heartbeat, Job

VERSION = 1
CONTENT_TYPE = "application/json"
ID_CHARS = 32  # a message id: 32 hex digits (`shared.model.new_message_id`)

# Readers of each body kind. They ignore fields they do not know, so a producer one version ahead, with an
# optional field more, stays readable; they check the types of the fields they do know.
_JOB: TypeAdapter[Job] = TypeAdapter(Job)
_RECORDS: TypeAdapter[list[AttemptRecord]] = TypeAdapter(list[AttemptRecord])
_HEARTBEAT: TypeAdapter[Heartbeat] = TypeAdapter(Heartbeat)
_REPORTS: TypeAdapter[list[DeliveryReport]] = TypeAdapter(list[DeliveryReport])
_VERDICT_KEYS = ("site", "reason", "detail", "attempts")

# AMQP header names of delivery state.
H_ATTEMPT = "x-relay-attempt"  # attempts made so far, all sites
H_SITE_ATTEMPT = "x-relay-site-attempt"  # attempts made at the current site
H_SITE = "x-relay-site"  # the site whose queue holds the job now
H_ORIGIN = "x-relay-origin"  # the site routing chose at submit
# Attempts that failed while their site's breaker was open: a site outage, not a problem of the message.
# They stay in the history (`x-relay-attempt` counts them) but not towards `worker.max_attempts`, so a long
# outage of every site never dead-letters a job for attempts; its validity decides (dead letter `expired`).
H_OUTAGE_ATTEMPT = "x-relay-outage-attempt"
H_REASON = "x-relay-reason"  # dead letters: DeadReason
H_DETAIL = "x-relay-detail"  # dead letters: the platform's last answer
H_REPLAY = "x-relay-replay"  # replays: how many times an operator replayed it
# The job may already have been sent once (its publish was repeated without knowing whether the first
# landed): the worker marks its next attempt as a possible duplicate.
H_POSSIBLE_DUPLICATE = "x-relay-possible-duplicate"
# Callbacks: tries made so far (a deferral because its host was busy is not one).
H_CALLBACK_ATTEMPT = "x-relay-callback-attempt"


def encode_job(job: Job) -> bytes:
    return orjson.dumps({"v": VERSION, "job": job})


def encode_jobs(jobs: list[Job]) -> bytes:
    return orjson.dumps({"v": VERSION, "jobs": jobs})


@dataclass(frozen=True, slots=True, kw_only=True)
class UnreadableJob:
    """A job of a job message that this version cannot read: a required field missing or of a wrong type."""

    id: str | None  # its id, when that much is readable
    text: str  # the job as it came, as JSON, for its dead letter
    error: str


def read_job(item: Any) -> Job:
    """A job from its JSON object. Fields this version does not know (a newer producer's optional ones)
    are ignored; a missing required field, or one of the wrong type, is an `EnvelopeError`."""
    try:
        return _JOB.validate_python(item)
    except ValidationError as exc:
        raise EnvelopeError(f"malformed job: {_errors(exc)}") from None


def decode_job_items(body: bytes) -> list[Job | UnreadableJob]:
    """The jobs of a job message, whether it carries one or a bundle, each read on its own: one job that
    cannot be read does not take the others with it. `EnvelopeError` when the envelope is unreadable."""
    data = _load(body, ("jobs", "job"))
    items = data["jobs"] if "jobs" in data else [data["job"]]
    if not isinstance(items, list) or not items:
        raise EnvelopeError("malformed job message: a bundle holds a non-empty list of jobs")
    return [_job_or_unreadable(item) for item in items]


def decode_jobs(body: bytes) -> list[Job]:
    """The jobs of a job message; `EnvelopeError` when any of them cannot be read."""
    jobs = decode_job_items(body)
    for job in jobs:
        if isinstance(job, UnreadableJob):
            raise EnvelopeError(job.error)
    return cast(list[Job], jobs)


def _job_or_unreadable(item: Any) -> Job | UnreadableJob:
    try:
        return read_job(item)
    except EnvelopeError as exc:
        found = item.get("id") if isinstance(item, dict) else None
        readable = isinstance(found, str) and 0 < len(found) <= ID_CHARS
        return UnreadableJob(id=found if readable else None, text=orjson.dumps(item).decode(), error=str(exc))


def encode_events(records: list[AttemptRecord]) -> bytes:
    return orjson.dumps({"v": VERSION, "events": records})


def decode_events(body: bytes) -> list[AttemptRecord]:
    """Attempt records; fields this version does not know are ignored."""
    items = _load(body, ("events",))["events"]
    try:
        return _RECORDS.validate_python(items)
    except ValidationError as exc:
        raise EnvelopeError(f"malformed events: {_errors(exc)}") from None


def encode_reports(reports: list[DeliveryReport]) -> bytes:
    return orjson.dumps({"v": VERSION, "reports": reports})


def decode_reports(body: bytes) -> list[DeliveryReport]:
    """Platforms' delivery reports; fields this version does not know are ignored."""
    items = _load(body, ("reports",))["reports"]
    try:
        return _REPORTS.validate_python(items)
    except ValidationError as exc:
        raise EnvelopeError(f"malformed reports: {_errors(exc)}") from None


def encode_dead(job: Job, *, site: str, reason: DeadReason, detail: str, attempts: int) -> bytes:
    return orjson.dumps(
        {
            "v": VERSION,
            "dead": {
                "job": job,
                "site": site,
                "reason": reason,
                "detail": detail,
                "attempts": attempts,
            },
        }
    )


def decode_dead(body: bytes) -> tuple[Job, dict[str, Any]]:
    """The dead job and its verdict (``site``, ``reason``, ``detail``, ``attempts``; others are ignored)."""
    data = _load(body, ("dead",))["dead"]
    if not isinstance(data, dict):
        raise EnvelopeError("malformed dead letter: not an object")
    job = read_job(data.get("job"))
    verdict = {key: data[key] for key in _VERDICT_KEYS if key in data}
    try:
        verdict["reason"] = DeadReason(verdict["reason"])
    except (KeyError, ValueError) as exc:
        raise EnvelopeError(f"malformed dead letter: reason {exc}") from None
    return job, verdict


def _load(body: bytes, keys: tuple[str, ...]) -> dict[str, Any]:
    """The envelope, once it is a version `VERSION` one holding one of `keys`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != VERSION or not any(key in data for key in keys):
        raise EnvelopeError(f"not a version {VERSION} {' or '.join(keys)} envelope")
    return data


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}" for error in exc.errors()
    )[:500]


def encode_heartbeat(beat: Heartbeat) -> bytes:
    return orjson.dumps({"v": VERSION, "heartbeat": beat})


def decode_heartbeat(body: bytes) -> Heartbeat:
    data = _load(body, ("heartbeat",))["heartbeat"]
    try:
        return _HEARTBEAT.validate_python(data)
    except ValidationError as exc:
        raise EnvelopeError(f"malformed heartbeat: {_errors(exc)}") from None
