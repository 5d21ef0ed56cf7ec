"""Builds the adapter a site's settings name."""

from __future__ import annotations

from shared.errors import ConfigError
from shared.reports import ReportUrls
from shared.settings import PlatformKind, SiteSettings
from workers.platforms.base import Platform
from workers.platforms.http_json import HttpJsonPlatform
from workers.platforms.jasmin import JasminPlatform
from workers.platforms.kannel import KannelPlatform
from workers.platforms.smpp import SmppPlatform
from workers.platforms.smpp_link import SmppLink

DEFAULT_CONCURRENCY = 64


def make_platform(
    site: SiteSettings, *, concurrency: int = DEFAULT_CONCURRENCY, reports: ReportUrls | None = None
) -> Platform:
    """The site's adapter, its connection pool sized for `concurrency` requests at once. `reports`:
    where the platform sends delivery reports (None: it is asked for none; an smpp site asks for
    receipts whenever the site has a `report_secret`, and they come back on its own session)."""
    if site.platform is PlatformKind.HTTP_JSON:
        return HttpJsonPlatform(
            url=site.url,
            token=site.token,
            timeout_s=site.timeout_s,
            batch_size=site.batch_size,
            concurrency=concurrency,
            reports=reports,
        )
    if site.platform is PlatformKind.SMPP:
        return _smpp(site)
    username, password = _credentials(site)
    if site.platform is PlatformKind.KANNEL:
        return KannelPlatform(
            url=site.url,
            username=username,
            password=password,
            timeout_s=site.timeout_s,
            concurrency=concurrency,
            reports=reports,
        )
    return JasminPlatform(
        url=site.url,
        username=username,
        password=password,
        timeout_s=site.timeout_s,
        concurrency=concurrency,
        reports=reports,
    )


def _credentials(site: SiteSettings) -> tuple[str, str]:
    if site.username is None or site.password is None:
        raise ConfigError(f"sites.*.username and password are needed for a {site.platform.value} platform")
    return site.username, site.password


def _smpp(site: SiteSettings) -> SmppPlatform:
    # The settings' validator makes these present for an smpp site.
    assert site.host is not None and site.port is not None
    assert site.system_id is not None and site.password is not None
    link = SmppLink(
        host=site.host,
        port=site.port,
        system_id=site.system_id,
        password=site.password,
        system_type=site.system_type,
        timeout_s=site.timeout_s,
        window=site.window,
        enquire_link_interval_s=site.enquire_link_interval_s,
    )
    return SmppPlatform(link=link, long_messages=site.long_messages, receipts=site.report_secret is not None)
