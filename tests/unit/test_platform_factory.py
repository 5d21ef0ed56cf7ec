"""make_platform builds the adapter a site names, with that site's settings."""

from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.settings import SiteSettings
from workers.platforms import make_platform
from workers.platforms.http_json import HttpJsonPlatform
from workers.platforms.jasmin import JasminPlatform
from workers.platforms.kannel import KannelPlatform


async def test_http_json_takes_the_site_batch_size() -> None:
    platform = make_platform(
        SiteSettings(url="http://127.0.0.1:9001/v1.0/message", batch_size=50), concurrency=4
    )
    assert isinstance(platform, HttpJsonPlatform)
    assert platform.max_batch == 50
    await platform.aclose()


@pytest.mark.parametrize(("kind", "cls"), [("kannel", KannelPlatform), ("jasmin", JasminPlatform)])
async def test_one_message_platforms(kind: str, cls: type) -> None:
    site = SiteSettings(platform=kind, url="http://127.0.0.1:13013/x", username="u", password="p")
    platform = make_platform(site)
    assert isinstance(platform, cls)
    assert platform.max_batch == 1
    await platform.aclose()


def test_kannel_without_credentials_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="username and password"):
        make_platform(SiteSettings(platform="kannel", url="http://127.0.0.1:13013/x"))
