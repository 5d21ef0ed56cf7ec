"""A store that refuses some rows of a batch, told apart from a store that is away, and the rest of the
batch kept.

A refusal is about the data (a value too long for its column, a NUL in a text, a constraint): the same
rows fail again however often they are tried, and on PostgreSQL they fail the whole transaction with the
innocent rows in it. A batch refused is therefore halved until each refused row stands alone, and every
other row is written. Anything else (connection lost, server starting, serialization failure, a lock
timeout) is the store being away: the caller keeps the whole batch and tries again later.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Integer, String, Table
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

# SQLSTATE classes of refused data: 22 data exception, 23 integrity constraint violation.
_REFUSING_SQLSTATE_CLASSES = ("22", "23")
_INT32 = (-(2**31), 2**31 - 1)

T = TypeVar("T")


def refused(exc: BaseException) -> bool:
    """Whether `exc` says the store refuses this data (trying it again cannot succeed)."""
    if isinstance(exc, IntegrityError | DataError):
        return True
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(sqlstate, str) and sqlstate[:2] in _REFUSING_SQLSTATE_CLASSES
    if isinstance(exc, StatementError):
        return True  # a value its column type could not bind; no statement reached the store
    if isinstance(exc, SQLAlchemyError | OSError | TimeoutError):
        return False
    # A value the driver could not send (an integer too big for SQLite, an unencodable string).
    return isinstance(exc, ValueError | TypeError | ArithmeticError)


async def write_isolating(
    items: Sequence[T],
    write: Callable[[Sequence[T]], Awaitable[None]],
    on_refused: Callable[[T, Exception], Awaitable[None]],
) -> None:
    """`write(items)`; when the store refuses it, each half on its own, down to single items, which go to
    `on_refused`. An error that is not a refusal propagates: some halves may be written by then, so
    `write` must be safe to repeat."""
    try:
        await write(items)
    except Exception as exc:
        if not refused(exc):
            raise
        if len(items) == 1:
            await on_refused(items[0], exc)
            return
        half = len(items) // 2
        await write_isolating(items[:half], write, on_refused)
        await write_isolating(items[half:], write, on_refused)


def fitted(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """`row` with every value made to fit its column: texts without NUL characters (PostgreSQL holds
    none) and cut to the column's width, a missing text of a NOT NULL column empty, integers within 32
    bits. For the last attempt at keeping a refused row visible rather than losing it."""
    out = dict(row)
    for name, value in row.items():
        column = table.c[name]
        if isinstance(column.type, String):  # Text too
            if value is None:
                out[name] = None if column.nullable else ""
                continue
            text = str(value).replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
            width = column.type.length
            out[name] = text[:width] if width else text
        elif isinstance(column.type, Integer) and isinstance(value, int):
            out[name] = min(max(value, _INT32[0]), _INT32[1])
    return out
