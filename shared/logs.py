"""Structured logs (structlog) that never show a phone number or a message text in full.

Masking goes by field name, at any depth of the event (dicts, lists, dataclasses): a number's fields keep
its first four and last two characters, a text's fields show only its length. Ids and every other field
are left alone: a message id is 32 hex digits and often holds a long run of digits. Free text that can
quote a number (the event, errors, exception tracebacks, a platform's `detail`) has what looks like a
phone number masked, and the parameters SQLAlchemy quotes in its errors hidden.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

# Field names, compared in lower case (forms such as twilio's "To" and "Body" too).
_BODY_KEYS = frozenset({"body", "text", "content", "message_body", "message_text", "short_message"})
_NUMBER_KEYS = frozenset(
    {
        "to",
        "to_number",
        "msisdn",
        "number",
        "phone",
        "phone_number",
        "recipient",
        "recipients",
        "destination",
        "destination_addr",
        "from",
        "from_number",
        "sender",
        "source_addr",
    }
)
_FREE_TEXT_KEYS = frozenset({"event", "error", "errors", "exception", "detail", "reason", "message"})
# 8 to 15 digits (E.164 at most), maybe with a "+" and single spaces, that are not part of a longer word:
# an id's run of digits between hex letters is not a number.
_NUMBER_IN_TEXT = re.compile(r"(?<![\w+-])\+?\d(?: ?\d){7,14}(?![\w-])")
# SQLAlchemy's errors quote a statement's parameters: numbers and texts of the messages written.
_SQL_PARAMETERS = re.compile(r"\[parameters: [^\n]*")
_MAX_DEPTH = 8


def mask_number(value: str) -> str:
    """Keep the country prefix and the last two digits: ``+3161234567`` -> ``+316*****67``."""
    digits = value.strip()
    if len(digits) <= 5:
        return "*" * len(digits)
    return digits[:4] + "*" * (len(digits) - 6) + digits[-2:]


def mask_text(value: str) -> str:
    return f"<{len(value)} chars>"


def mask_free_text(value: str) -> str:
    """What looks like a phone number masked, SQL parameters hidden; ids and the rest untouched."""
    hidden = _SQL_PARAMETERS.sub("[parameters: hidden]", value)
    return _NUMBER_IN_TEXT.sub(lambda m: mask_number(m.group(0)), hidden)


def _masked(key: str, value: Any, depth: int = 0) -> Any:
    """`value` of field `key` as it may be logged; lists take the field name of their owner."""
    if depth > _MAX_DEPTH:
        return "<nested too deep>"
    name = key.lower()
    if isinstance(value, BaseException):
        value = repr(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, Mapping):
        return {k: _masked(str(k), v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_masked(key, v, depth + 1) for v in value]
    if name in _NUMBER_KEYS and isinstance(value, str | int) and not isinstance(value, bool):
        return mask_number(str(value))
    if not isinstance(value, str):
        return value
    if name in _BODY_KEYS:
        return mask_text(value)
    if name in _FREE_TEXT_KEYS:
        return mask_free_text(value)
    return value


def mask_sensitive(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        event[key] = _masked(key, value)
    return event


class _CurrentStderr:
    """Writes to whatever `sys.stderr` is at the moment of writing.

    A logger that kept the stream it was configured with breaks once that stream is replaced and closed
    (a test's capture, a daemon redirecting its output), and a failing log call must never take a
    request or a delivery down with it.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(*, level: str = "INFO", json_output: bool = True) -> None:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level.upper())
    renderer: Any = structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_sensitive,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
