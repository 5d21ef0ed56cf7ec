"""INSERT ... ON CONFLICT for the two backends the store runs on (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def dialect_insert(dialect_name: str, table: Any) -> Any:
    """The dialect's own `insert`, which has `on_conflict_do_nothing/update`."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_for(session: AsyncSession, table: Any) -> Any:
    """`dialect_insert` for the session's store."""
    return dialect_insert(session.get_bind().dialect.name, table)
