"""A synchronous engine on the same SQLite file, for writers that own a thread.

Through aiosqlite every statement of a transaction is a hop between the event loop and a thread; on a
busy loop each hop waits its turn, so a group commit took tens of milliseconds. A writer with its own
thread and a plain sqlite3 connection does the whole transaction in one hop.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event

from shared.store.engine import is_sqlite


def sync_sqlite_url(url: str) -> str:
    """``sqlite+aiosqlite:///f.db`` -> ``sqlite:///f.db``."""
    scheme, sep, rest = url.partition("://")
    return "sqlite" + sep + rest if scheme.startswith("sqlite") else url


def make_sync_sqlite_engine(url: str) -> Engine | None:
    """The sync engine of a SQLite store (WAL, synchronous=FULL, as the async one); None for others."""
    if not is_sqlite(url):
        return None
    engine = create_engine(sync_sqlite_url(url), connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _durable_sqlite(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine
