"""Structured logs (structlog) that never show a phone number or a message text in full."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys whose values are message content or a person's number.
_BODY_KEYS = frozenset({"body", "text", "content", "message_body"})
_NUMBER_KEYS = frozenset({"to", "msisdn", "number", "phone", "recipient", "from_number"})
_DIGITS = re.compile(r"\+?\d[\d ]{6,}\d")


def mask_number(value: str) -> str:
    """Keep the country prefix and the last two digits: ``+3161234567`` -> ``+316*****67``."""
    digits = value.strip()
    if len(digits) <= 5:
        return "*" * len(digits)
    return digits[:4] + "*" * (len(digits) - 6) + digits[-2:]


def mask_text(value: str) -> str:
    return f"<{len(value)} chars>"


def _mask_in_text(value: str) -> str:
    return _DIGITS.sub(lambda m: mask_number(m.group(0)), value)


def mask_sensitive(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if not isinstance(value, str):
            continue
        if key in _BODY_KEYS:
            event[key] = mask_text(value)
        elif key in _NUMBER_KEYS:
            event[key] = mask_number(value)
        else:
            event[key] = _mask_in_text(value)
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
