"""Every SQLite connection of the relay is opened the one durable way: WAL, synchronous=FULL, a busy
timeout (the async store engine, the store writer's sync engine and the ingress spool alike)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from ingress.spool import Spool
from shared.settings import StoreSettings
from shared.store.engine import SQLITE_BUSY_TIMEOUT_S, make_engine, make_sync_sqlite_engine

FULL = 2  # PRAGMA synchronous answers a number
EXPECTED = ("wal", FULL, SQLITE_BUSY_TIMEOUT_S * 1000)
QUERIES = ("PRAGMA journal_mode", "PRAGMA synchronous", "PRAGMA busy_timeout")


async def test_the_async_and_the_sync_store_engines_open_sqlite_alike(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'relay.db'}"
    engine = make_engine(StoreSettings(url=url))
    async with engine.connect() as connection:
        seen_async = tuple([(await connection.execute(text(q))).scalar() for q in QUERIES])
    await engine.dispose()
    sync_engine = make_sync_sqlite_engine(url)
    assert sync_engine is not None
    with sync_engine.connect() as connection:
        seen_sync = tuple(connection.execute(text(q)).scalar() for q in QUERIES)
    sync_engine.dispose()
    assert seen_async == seen_sync == EXPECTED


async def test_the_spool_opens_its_file_the_same_way(tmp_path: Path) -> None:
    spool = await Spool(path=tmp_path / "spool.db").open()
    try:
        db = spool._db
        assert db is not None
        assert tuple(db.execute(q).fetchone()[0] for q in QUERIES) == EXPECTED
    finally:
        await spool.close()


def test_other_stores_get_no_sync_engine() -> None:
    assert make_sync_sqlite_engine("postgresql+asyncpg://relay@db/relay") is None
