"""Builds the adapter a site's settings name."""

from __future__ import annotations

from shared.errors import ConfigError
from shared.settings import PlatformKind, SiteSettings
from workers.platforms.base import Platform
from workers.platforms.http_json import HttpJsonPlatform
from workers.platforms.jasmin import JasminPlatform
from workers.platforms.kannel import KannelPlatform

DEFAULT_CONCURRENCY = 64


def make_platform(site: SiteSettings, *, concurrency: int = DEFAULT_CONCURRENCY) -> Platform:
    """The site's adapter, its connection pool sized for `concurrency` requests at once."""
    if site.platform is PlatformKind.HTTP_JSON:
        return HttpJsonPlatform(
            url=site.url,
            token=site.token,
            timeout_s=site.timeout_s,
            batch_size=site.batch_size,
            concurrency=concurrency,
        )
    username, password = _credentials(site)
    if site.platform is PlatformKind.KANNEL:
        return KannelPlatform(
            url=site.url,
            username=username,
            password=password,
            timeout_s=site.timeout_s,
            concurrency=concurrency,
        )
    return JasminPlatform(
        url=site.url, username=username, password=password, timeout_s=site.timeout_s, concurrency=concurrency
    )


def _credentials(site: SiteSettings) -> tuple[str, str]:
    if site.username is None or site.password is None:
        raise ConfigError(f"sites.*.username and password are needed for a {site.platform.value} platform")
    return site.username, site.password
