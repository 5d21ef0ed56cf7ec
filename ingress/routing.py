"""Which site's queue takes a new message: smooth weighted round-robin, or one primary site."""

from __future__ import annotations

from shared.errors import ConfigError
from shared.settings import RoutingPolicy, RoutingSettings


class Router:
    """Smooth weighted round-robin (as nginx's): weights 2:1 give a, b, a, a, b, a, never bursts."""

    def __init__(self, *, settings: RoutingSettings, sites: list[str]) -> None:
        if not sites:
            raise ConfigError("sites: at least one site is needed")
        self._policy = settings.policy
        self._primary = settings.primary or sites[0]
        self._sites = list(sites)
        self._weights = [settings.weights.get(site, 1) for site in self._sites]
        if all(w <= 0 for w in self._weights):
            raise ConfigError("routing.weights: at least one site needs a weight above 0")
        self._current = [0] * len(self._sites)
        self._total = sum(w for w in self._weights if w > 0)

    def next_site(self) -> str:
        if self._policy is RoutingPolicy.PRIMARY:
            return self._primary
        best = -1
        for i, weight in enumerate(self._weights):
            if weight <= 0:
                continue
            self._current[i] += weight
            if best < 0 or self._current[i] > self._current[best]:
                best = i
        self._current[best] -= self._total
        return self._sites[best]
