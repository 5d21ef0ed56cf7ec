"""Wire format: versioned JSON bodies of jobs, events and dead letters.

A job message carries one job (`{"v": 1, "job": ...}`: retries, replays, the spool) or a bundle of jobs
that share one delivery state (`{"v": 1, "jobs": [...]}`: the ingress publishes the jobs of concurrent
submits for one site together, so the broker stores, delivers and acks them once).

Delivery state that must survive a worker (attempt count, sites tried) travels in AMQP headers, not in
the body, so a retry republishes the body untouched.
"""

from __future__ import annotations

from typing import Any

import orjson

from shared.errors import EnvelopeError
from shared.model import AttemptRecord, DeadReason, Heartbeat, Job, Outcome, Status

VERSION = 1
CONTENT_TYPE = "application/json"

# AMQP header names of delivery state.
H_ATTEMPT = "x-relay-attempt"  # attempts made so far, all sites
H_SITE_ATTEMPT = "x-relay-site-attempt"  # attempts made at the current site
H_SITE = "x-relay-site"  # the site whose queue holds the job now
H_ORIGIN = "x-relay-origin"  # the site routing chose at submit
H_REASON = "x-relay-reason"  # dead letters: DeadReason
H_DETAIL = "x-relay-detail"  # dead letters: the platform's last answer
H_REPLAY = "x-relay-replay"  # replays: how many times an operator replayed it
# The job may already have been sent once (its publish was repeated without knowing whether the first
# landed): the worker marks its next attempt as a possible duplicate.
H_POSSIBLE_DUPLICATE = "x-relay-possible-duplicate"


def encode_job(job: Job) -> bytes:
    return orjson.dumps({"v": VERSION, "job": job})


def encode_jobs(jobs: list[Job]) -> bytes:
    return orjson.dumps({"v": VERSION, "jobs": jobs})


def decode_jobs(body: bytes) -> list[Job]:
    """The jobs of a job message, whether it carries one or a bundle."""
    data = _load(body, ("jobs", "job"))
    items = data["jobs"] if "jobs" in data else [data["job"]]
    try:
        if not isinstance(items, list) or not items:
            raise TypeError("a bundle holds a non-empty list of jobs")
        return [Job(**item) for item in items]
    except TypeError as exc:
        raise EnvelopeError(f"malformed job: {exc}") from None


def encode_events(records: list[AttemptRecord]) -> bytes:
    return orjson.dumps({"v": VERSION, "events": records})


def decode_events(body: bytes) -> list[AttemptRecord]:
    items = _load(body, ("events",))["events"]
    try:
        return [
            AttemptRecord(
                **{
                    **item,
                    "outcome": Outcome(item["outcome"]),
                    "status": Status(item["status"]) if item.get("status") else None,
                    "job": Job(**item["job"]) if item.get("job") else None,
                }
            )
            for item in items
        ]
    except (TypeError, KeyError, ValueError) as exc:
        raise EnvelopeError(f"malformed events: {exc}") from None


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
    """The dead job and its verdict (``site``, ``reason``, ``detail``, ``attempts``)."""
    data = _load(body, ("dead",))["dead"]
    try:
        job = Job(**data.pop("job"))
        data["reason"] = DeadReason(data["reason"])
    except (TypeError, KeyError, ValueError) as exc:
        raise EnvelopeError(f"malformed dead letter: {exc}") from None
    return job, data


def _load(body: bytes, keys: tuple[str, ...]) -> dict[str, Any]:
    """The envelope, once it is a version `VERSION` one holding one of `keys`."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != VERSION or not any(key in data for key in keys):
        raise EnvelopeError(f"not a version {VERSION} {' or '.join(keys)} envelope")
    return data


def encode_heartbeat(beat: Heartbeat) -> bytes:
    return orjson.dumps({"v": VERSION, "heartbeat": beat})


def decode_heartbeat(body: bytes) -> Heartbeat:
    data = _load(body, ("heartbeat",))["heartbeat"]
    try:
        return Heartbeat(**data)
    except TypeError as exc:
        raise EnvelopeError(f"malformed heartbeat: {exc}") from None
