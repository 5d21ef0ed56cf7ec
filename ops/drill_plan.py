"""What a drill is asked to do, what it runs against, and how fast its traffic really went."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.settings import Settings

FAULTS = ("down", "blackhole", "error", "kill-worker", "broker-node")
DEFAULT_FAULT = "down"
# Traffic below this share of the asked rate is reported as short: the ingress or this machine could not
# keep up, and the drill ran under less load than asked.
SHORT_OF_RATE = 0.9


class DrillRefused(Exception):
    """The drill will not run (unsafe target, bad arguments, deployment not reachable)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DrillPlan:
    site: str
    fault: str
    messages: int
    rate_per_s: float
    settle_timeout_s: float
    allow_real_platforms: bool
    run_dir: Path  # where the drill keeps its API key


@dataclass(frozen=True, slots=True, kw_only=True)
class DrillTarget:
    """The deployment a drill runs against."""

    config: Settings
    relay: list[str]  # the `relay` command with the deployment's configuration (to make the drill's key)
    simulators: dict[str, str]  # site -> admin URL of its simulated platform


@dataclass(frozen=True, slots=True, kw_only=True)
class Pace:
    """The rate the drill was asked to send at, and the rate it sent at (pauses for recovery left out)."""

    asked_per_s: float
    sent_per_s: float

    @property
    def short(self) -> bool:
        return self.sent_per_s < SHORT_OF_RATE * self.asked_per_s

    def describe(self) -> str:
        if not self.short:
            return f"sent at {self.sent_per_s:.0f}/s as asked ({self.asked_per_s:g}/s)"
        return (
            f"sent at only {self.sent_per_s:.0f}/s, short of the {self.asked_per_s:g}/s asked: the ingress "
            "(or this machine) took no more, so the drill ran under less load than asked"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate_per_s": self.asked_per_s,
            "send_rate_per_s": round(self.sent_per_s, 1),
            "short": self.short,
        }
