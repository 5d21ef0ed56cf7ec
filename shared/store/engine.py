"""The store's engines and sessions, and the one place that knows how a SQLite file is opened.

Every SQLite connection of the relay (the async engine, the store writer's thread, the ingress spool)
goes through `make_durable`: WAL lets readers run beside the one writer, synchronous=FULL makes each
commit an fsync, as the guarantees promise, and a busy timeout lets concurrent writers wait their turn.

The store writer's thread has an engine of its own on the same file: through aiosqlite every statement
of a transaction is a hop between the event loop and a thread, and on a busy loop each hop waits its
turn, so a group commit took tens of milliseconds. A plain sqlite3 connection owned by a thread does the
whole transaction in one hop.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from shared.settings import StoreSettings

SQLITE_BUSY_TIMEOUT_S = 30
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}",
)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_durable(dbapi_connection: Any, *_: Any) -> None:
    """Sets the pragmas of a fresh SQLite connection (sqlite3's, or aiosqlite's adapter of one); the
    signature is that of SQLAlchemy's "connect" event."""
    cursor = dbapi_connection.cursor()
    for pragma in _SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def make_engine(settings: StoreSettings) -> AsyncEngine:
    if not is_sqlite(settings.url):
        return create_async_engine(settings.url, pool_pre_ping=True, pool_size=10)
    engine = create_async_engine(settings.url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
    event.listen(engine.sync_engine, "connect", make_durable)
    return engine


def sync_sqlite_url(url: str) -> str:
    """``sqlite+aiosqlite:///f.db`` -> ``sqlite:///f.db``."""
    scheme, sep, rest = url.partition("://")
    return "sqlite" + sep + rest if scheme.startswith("sqlite") else url


def make_sync_sqlite_engine(url: str) -> Engine | None:
    """A synchronous engine on the SQLite file of `url`, for a writer that owns a thread; None when the
    store is not SQLite."""
    if not is_sqlite(url):
        return None
    engine = create_engine(
        sync_sqlite_url(url), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
    )
    event.listen(engine, "connect", make_durable)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
