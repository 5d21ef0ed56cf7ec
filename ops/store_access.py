"""Opening the store from an operator command, and turning its failures into one clear error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.config_file import sqlite_file
from shared.errors import StoreUnavailable
from shared.settings import StoreSettings
from shared.store.engine import make_engine, make_sessionmaker

T = TypeVar("T")

STORE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    ProgrammingError,
    InterfaceError,
    DBAPIError,
    OSError,
    TimeoutError,
)


def store_error(exc: Exception) -> StoreUnavailable:
    text = str(getattr(exc, "orig", None) or exc).strip()
    first = text.splitlines()[0] if text else exc.__class__.__name__
    if "no such table" in first or ("relation" in first and "does not exist" in first):
        return StoreUnavailable(f"the store has no schema ({first}): run `relay db upgrade`")
    return StoreUnavailable(f"the store cannot be reached: {first}")


def require_store(settings: StoreSettings) -> None:
    """A SQLite store's file exists: connecting to a missing one would create an empty store, and the
    command would report "no schema" for what is really the wrong folder or configuration."""
    path = sqlite_file(settings.url)
    if path is not None and not path.exists():
        raise StoreUnavailable(
            f"there is no store at {path.absolute()}: `relay db upgrade` creates it, "
            "or name the store in use with --config or RELAY_STORE__URL"
        )


@asynccontextmanager
async def open_store(settings: StoreSettings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions of an existing store (`require_store`), for one command."""
    require_store(settings)
    engine = make_engine(settings)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine; a store that cannot be reached becomes `StoreUnavailable`."""
    try:
        return asyncio.run(coro)
    except STORE_ERRORS as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        raise store_error(exc) from None
