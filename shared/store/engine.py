"""The async engine and sessions of the store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from shared.settings import StoreSettings


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(settings: StoreSettings) -> AsyncEngine:
    if not is_sqlite(settings.url):
        return create_async_engine(settings.url, pool_pre_ping=True, pool_size=10)
    engine = create_async_engine(settings.url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _durable_sqlite(dbapi_connection: Any, _: Any) -> None:
        # WAL lets readers run beside the one writer; FULL makes each commit an fsync, as promised.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
