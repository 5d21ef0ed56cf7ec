"""The submit's check of a callback URL's host: it must resolve to addresses callbacks may reach
(`shared.callbacks.guard`). Verdicts are cached per host for a minute, so a stream of submits naming one
endpoint costs one lookup."""

from __future__ import annotations

from shared.callback_settings import CallbackSettings
from shared.callbacks.guard import AddressPolicy, CachedResolver

FIELD = "callback_url"


class CallbackCheck:
    def __init__(self, settings: CallbackSettings) -> None:
        self._resolver = CachedResolver(AddressPolicy(settings.allow_networks))

    async def errors(self, url: str | None, *, field_prefix: str = "") -> list[dict[str, str]]:
        """The field error of `url`, when callbacks may not go there; none for no URL."""
        if url is None:
            return []
        why = await self._resolver.refusal(url)
        return [] if why is None else [{"field": f"{field_prefix}{FIELD}", "message": why}]
