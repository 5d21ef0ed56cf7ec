"""Callback jobs from the status changes a fold applied, published before the fold commits.

The recorder publishes them, confirmed, inside the fold's transaction: when a publish fails the fold is
rolled back and the reports stay unacked, to be folded (and their callbacks published) again. Publishing
after the commit instead could lose a callback to a crash in between, since the redelivered report then
changes nothing. A commit that fails after the publish leaves a callback for a change the store does not
hold yet; the reports are folded again, the change made, and its callback sent again under the same
event id, which the customer deduplicates by.

A fold's jobs leave in bundles of up to `BUNDLE_MAX`, one confirmed message each: the callback worker
acks a bundle once each of its jobs is sent, stopped, or re-published on its own for a retry. The bound
keeps a message small and what one worker holds in memory (its prefetch of bundles) bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ingress import public_texts
from shared.broker import ConfirmedPublisher
from shared.callbacks.wire import CallbackJob, encode_callbacks, event_id
from shared.model import DeadReason, Outcome, Status
from shared.store.status_changes import StatusChange
from shared.topology import CALLBACK_KEY, callbacks_exchange

BUNDLE_MAX = 100

# What a tenant is told of a dead letter's reason; the platform's own answer is for operators.
_REASON_TEXTS = {
    DeadReason.REJECTED.value: public_texts.REJECTED,
    DeadReason.EXPIRED.value: public_texts.EXPIRED,
    DeadReason.ATTEMPTS_EXHAUSTED.value: "no platform took it in the attempts allowed",
    DeadReason.MALFORMED.value: "the relay could not read it",
    DeadReason.REDELIVERY_LIMIT.value: "the relay could not settle it",
}


def public_error(code: str, detail: str) -> str:
    if code in _REASON_TEXTS:
        return _REASON_TEXTS[code]
    if code in set(Outcome):
        return public_texts.public_detail(code, detail)
    return "failed"


def callback_jobs(changes: Sequence[StatusChange]) -> list[CallbackJob]:
    """A job for each change past `accepted` of a message with somewhere to call."""
    jobs = []
    for change in changes:
        if not change.callback_url or not change.tenant or change.new == Status.ACCEPTED:
            continue
        code = change.error_code
        jobs.append(
            CallbackJob(
                event_id=event_id(change.message_id, change.new),
                tenant=change.tenant,
                url=change.callback_url,
                message_id=change.message_id,
                reference=change.reference,
                status=change.new,
                site=change.site,
                at=change.at,
                error_code=code,
                error_text=public_error(code, change.error_detail or "") if code is not None else None,
            )
        )
    return jobs


async def publish_callbacks(
    publisher: ConfirmedPublisher, prefix: str, jobs: Sequence[CallbackJob], *, timeout_s: float
) -> None:
    """Publish every job, in bundles, and wait for every confirm; raises when any is not confirmed."""
    if not jobs:
        return
    exchange = callbacks_exchange(prefix)
    bundles = [jobs[n : n + BUNDLE_MAX] for n in range(0, len(jobs), BUNDLE_MAX)]
    await asyncio.gather(
        *(
            publisher.publish(
                encode_callbacks(bundle),
                exchange=exchange,
                routing_key=CALLBACK_KEY,
                message_id=bundle[0].event_id,
                timeout_s=timeout_s,
            )
            for bundle in bundles
        )
    )
