"""Tenants' default callback URLs as the recorder's folds read them: cached a few seconds, per store and
tenant (a tenant with none is remembered too), then read again, so a change reaches callbacks soon."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.settings import StoreSettings
from shared.store import status_changes
from shared.store.callbacks import set_default_url
from shared.store.engine import make_engine, make_sessionmaker
from shared.store.status_changes import StatusChange, with_default_urls


@pytest.fixture
async def sessions(store_url):
    engine = make_engine(StoreSettings(url=store_url))
    yield make_sessionmaker(engine)
    await engine.dispose()


def change(tenant: str, url: str | None = None) -> StatusChange:
    return StatusChange(
        message_id=f"m-{tenant}",
        old="accepted",
        new="sent",
        site="a",
        at=1.0,
        tenant=tenant,
        callback_url=url,
    )


async def test_default_urls_are_read_once_per_ttl_and_then_again(sessions, monkeypatch: Any) -> None:
    status_changes._defaults.clear()
    reads: list[set[str]] = []
    real = status_changes.default_urls

    async def counted(session: Any, tenants: set[str]) -> dict[str, str]:
        reads.append(set(tenants))
        return await real(session, tenants)

    monkeypatch.setattr(status_changes, "default_urls", counted)
    monkeypatch.setattr(status_changes, "DEFAULT_URLS_TTL_S", 2.0)
    async with sessions.begin() as session:
        await set_default_url(session, tenant="t", url="https://one.example/cb")
    changes = [change("t"), change("none"), change("t", "https://own.example/")]
    for _ in range(3):
        async with sessions() as session:
            got = await with_default_urls(session, changes)
        assert [c.callback_url for c in got] == ["https://one.example/cb", None, "https://own.example/"]
    assert reads == [{"t", "none"}]  # a tenant without a default is remembered as such

    async with sessions.begin() as session:
        await set_default_url(session, tenant="t", url="https://two.example/cb")
    async with sessions() as session:
        assert (await with_default_urls(session, changes))[0].callback_url == "https://one.example/cb"
    await asyncio.sleep(2.1)
    async with sessions() as session:
        got = await with_default_urls(session, changes)
    assert got[0].callback_url == "https://two.example/cb" and len(reads) == 2
