"""Spooled messages that their own site's queue keeps refusing go to another site's queue.

A quorum queue nacks publishes while it has no leader (measured on a three-node cluster: a channel opened
while two nodes were down had every publish to a queue led from a dead node nacked at once), and a site's
queue can refuse for longer: a max-length policy with `reject-publish`, a queue left without a leader
after a partition. The spool keeps those messages durable, but the promise is delivery: a message whose
site's queue has refused it for `ingress.detour_after_s` is forwarded to the next site's queue instead, as
a worker hands a job on when its site's platform fails. A bulk-lane message keeps its lane.

A refusal may follow a copy that is queued after all (a nack does not promise the queue has none), so a
detoured message goes marked, like every spool entry forwarded again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ingress.metrics import DETOURED
from shared.broker import Verdict
from shared.logs import get_logger
from shared.topology import bulk_routing_key

log = get_logger("ingress.detours")

_BULK_SUFFIX = bulk_routing_key("")


@dataclass(slots=True)
class _Refusals:
    since: float  # the first refusal of the message at its own site
    detours: int = 0  # forwards to other sites so far: each goes one site further round the list


class Detours:
    def __init__(
        self, *, sites: Sequence[str], after_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._sites = list(sites)
        self._after_s = after_s
        self._clock = clock
        self._refused: dict[str, _Refusals] = {}

    def routing_key(self, message_id: str, routing_key: str) -> str:
        """Where the message goes now: its own routing key, or another site's once refused long enough."""
        refusals = self._refused.get(message_id)
        site, lane = _split(routing_key)
        if refusals is None or site not in self._sites or len(self._sites) < 2:
            return routing_key
        if self._clock() - refusals.since < self._after_s:
            return routing_key
        # Round the list from the next site on, the message's own site last: every site gets its turn.
        at = self._sites.index(site) + 1
        turns = self._sites[at:] + self._sites[:at]
        refusals.detours += 1
        to_site = turns[(refusals.detours - 1) % len(turns)]
        DETOURED.labels(site, to_site).inc()
        if refusals.detours == 1:
            log.warning(
                "site queue keeps refusing a spooled message; forwarding it to another site",
                message_id=message_id,
                from_site=site,
                to_site=to_site,
                refused_for_s=round(self._clock() - refusals.since, 1),
            )
        return to_site + lane

    def settle(self, message_id: str, verdict: Verdict) -> None:
        """Remember when the broker first refused the message; forget it once confirmed."""
        if verdict.confirmed:
            self._refused.pop(message_id, None)
        elif verdict.refused and message_id not in self._refused:
            self._refused[message_id] = _Refusals(since=self._clock())

    @property
    def pending(self) -> int:
        """Messages refused and not yet confirmed anywhere."""
        return len(self._refused)


def _split(routing_key: str) -> tuple[str, str]:
    if routing_key.endswith(_BULK_SUFFIX):
        return routing_key[: -len(_BULK_SUFFIX)], _BULK_SUFFIX
    return routing_key, ""
