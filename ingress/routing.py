"""Which site's queue takes a new message: smooth weighted round-robin, or one primary site."""

from __future__ import annotations

from shared.errors import ConfigError
from shared.settings import RoutingPolicy, RoutingSettings


class Router:
    """Smooth weighted round-robin (as nginx's): weights 2:1 give a, b, a, a, b, a, never bursts.

    A message goes only to a site that carries its segments whole (`segment_limits`); the ingress refuses
    at submit a message no site can carry, so one always can."""

    def __init__(
        self, *, settings: RoutingSettings, sites: list[str], segment_limits: dict[str, int] | None = None
    ) -> None:
        if not sites:
            raise ConfigError("sites: at least one site is needed")
        self._policy = settings.policy
        self._primary = settings.primary or sites[0]
        self._sites = list(sites)
        self._weights = [settings.weights.get(site, 1) for site in self._sites]
        if all(w <= 0 for w in self._weights):
            raise ConfigError("routing.weights: at least one site needs a weight above 0")
        self._current = [0] * len(self._sites)
        self._limits = segment_limits or {}

    def next_site(self, segments: int = 1) -> str:
        able = [self._limits.get(site, segments) >= segments for site in self._sites]
        if self._policy is RoutingPolicy.PRIMARY:
            if able[self._sites.index(self._primary)] or not any(able):
                return self._primary
            return self._sites[able.index(True)]
        best, total = -1, 0
        for i, weight in enumerate(self._weights):
            if weight <= 0 or not able[i]:
                continue
            total += weight
            self._current[i] += weight
            if best < 0 or self._current[i] > self._current[best]:
                best = i
        if best < 0:  # only sites of weight 0 carry it whole: the first of them
            return self._sites[able.index(True)] if any(able) else self._sites[0]
        self._current[best] -= total
        return self._sites[best]
