"""The interface every platform adapter implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from shared.model import Job, Outcome


def attempt_of(attempts: Sequence[int], index: int) -> int:
    """The attempt number of the `index`-th job of a send; 0 when not given."""
    return attempts[index] if index < len(attempts) else 0


@dataclass(frozen=True, slots=True)
class Result:
    """How one job fared at a platform; `detail` is the platform's answer, short, for the history."""

    outcome: Outcome
    detail: str = ""
    # The answer says the site is misconfigured or cannot take traffic at all (bad credentials, no
    # balance), not that this message is wrong: what `relay status` shows beside the open circuit.
    problem: str | None = None


class Platform(Protocol):
    """Sends jobs to one site's platform and classifies each outcome.

    `send` never raises for a platform's behaviour: refused connections, timeouts, garbage answers and
    HTTP errors are all classified into a `Result` per job, in the order given.
    """

    max_batch: int  # most jobs one `send` call takes (1 for one-message-per-request platforms)

    async def send(self, jobs: Sequence[Job], *, attempts: Sequence[int] = ()) -> list[Result]:
        """`attempts`: the number of this attempt of each job (1-based), which an adapter asking for
        delivery reports names in what it gives the platform; empty when not known."""
        ...

    async def aclose(self) -> None: ...
