"""Rendering shared by the operator commands: Rich on a terminal, plain text or JSON lines otherwise."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.table import Table

from shared.errors import ValidationFailed

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}

# Wide enough for a 32-character id and two timestamps when stdout is a pipe or a file.
PLAIN_WIDTH = 200


def parse_duration(text: str, *, option: str) -> timedelta:
    """``"90s"``, ``"15m"``, ``"2h"``, ``"7d"``, ``"1w"`` as a timedelta; anything else names the option."""
    match = _DURATION.match(text)
    if match is None:
        raise ValidationFailed(
            [{"field": option, "message": f"{text!r} is not a duration like 90s, 15m, 2h, 7d or 1w"}]
        )
    value = float(match.group(1))
    if value <= 0:
        raise ValidationFailed([{"field": option, "message": "the duration must be more than zero"}])
    return timedelta(seconds=value * _UNIT_S[match.group(2).lower()])


def is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def is_terminal_out() -> bool:
    return is_terminal(sys.stdout)


def plain_table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, header: bool = True) -> list[str]:
    """Rows as lines of columns aligned by spaces, for a pipe or a file: no box, no colour, no wrapping."""
    table = [list(headers), *(list(row) for row in rows)] if header else [list(row) for row in rows]
    if not table:
        return []
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    foot: str | None = None,
) -> None:
    """A Rich table on a terminal; plain aligned lines into a pipe or a file (what `relay status` does)."""
    if not is_terminal_out():
        lines = plain_table(headers, rows)
        output_lines = [f"{title}:", *lines] if title else lines
        write_lines([*output_lines, foot] if foot else output_lines)
        return
    table = Table(title=title)
    for name in headers:
        table.add_column(name)
    for row in rows:
        table.add_row(*row)
    console = stdout_console()
    console.print(table)
    if foot:
        console.print(foot)


def stdout_console() -> Console:
    """Colours and the terminal's width on a terminal; plain, wide text into a pipe or a file."""
    if is_terminal(sys.stdout):
        return Console()
    return Console(width=PLAIN_WIDTH, no_color=True, highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC, seconds precision; None stays None (JSON null)."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="seconds")


def short_time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def json_line(obj: Mapping[str, Any]) -> str:
    return orjson.dumps(obj, default=json_default, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()


def write_lines(lines: Iterable[str], stream: TextIO | None = None) -> None:
    """Write lines as they come; a reader that goes away (``| head``) ends the output quietly."""
    out = stream if stream is not None else sys.stdout
    if out is None:  # the reader went away earlier
        return
    try:
        for line in lines:
            out.write(line)
            out.write("\n")
        out.flush()
    except BrokenPipeError:
        # Keep Python from complaining again when it flushes stdout at exit.
        sys.stdout = None


def format_counts(counts: Mapping[str, int]) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{name} {count}" for name, count in sorted(counts.items()))


def quiet_client_logs() -> None:
    """The operator commands report a failure in one line of their own: the broker client's reconnect
    chatter and the HTTP client's line per request on stderr would bury it."""
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
