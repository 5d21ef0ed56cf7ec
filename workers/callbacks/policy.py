"""What becomes of a callback after a try: done, stopped, retried later, or dead."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class Next(enum.Enum):
    DONE = "done"  # a 2xx: the customer has it
    GONE = "gone"  # a 410: the customer wants no more of it; not retried, not a dead letter
    RETRY = "retry"  # later, through the delay tier of the try
    DEAD = "dead"  # tries exhausted: a dead callback


@dataclass(frozen=True, slots=True)
class Decision:
    next: Next
    delay_s: int = 0


def delay_after(retry_delays_s: Sequence[int], attempt: int) -> int:
    """The wait after the `attempt`-th failed try (1-based): the tiers in order, then the last."""
    return retry_delays_s[min(max(attempt, 1), len(retry_delays_s)) - 1]


def schedule(retry_delays_s: Sequence[int], max_attempts: int) -> list[int]:
    """The waits between the tries of a callback that always fails: `max_attempts - 1` of them."""
    return [delay_after(retry_delays_s, n) for n in range(1, max_attempts)]


def decide(
    status_code: int | None, *, attempt: int, max_attempts: int, retry_delays_s: Sequence[int]
) -> Decision:
    """After the `attempt`-th try (1-based) answered `status_code` (None: no answer at all)."""
    if status_code is not None and 200 <= status_code < 300:
        return Decision(Next.DONE)
    if status_code == 410:
        return Decision(Next.GONE)
    if attempt >= max_attempts:
        return Decision(Next.DEAD)
    return Decision(Next.RETRY, delay_after(retry_delays_s, attempt))
