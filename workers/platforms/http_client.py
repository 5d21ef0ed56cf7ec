"""What HTTP adapters share: the client they talk through, and how transport failures are classified."""

from __future__ import annotations

from typing import Protocol

from shared.http1 import HttpAnswer, NotSent, TransportFailure
from shared.model import Outcome
from workers.platforms.base import Result

MAX_DETAIL_CHARS = 200


class HttpRequester(Protocol):
    """What an adapter needs of an HTTP client (`Http1Client`, or a fake in unit tests)."""

    async def request(
        self, method: str, target: str, *, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> HttpAnswer: ...

    async def aclose(self) -> None: ...


def short(text: str | bytes) -> str:
    """A platform's answer cut to a size fit for the status history."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text if len(text) <= MAX_DETAIL_CHARS else text[: MAX_DETAIL_CHARS - 3] + "..."


def classify_transport_error(exc: TransportFailure) -> Result:
    """Unavailable when the request certainly never reached the platform whole, else ambiguous."""
    if isinstance(exc, NotSent):
        return Result(outcome=Outcome.UNAVAILABLE, detail=short(f"not sent: {exc}"))
    # Read timeout, reset or close after the request was sent, garbage instead of HTTP: the platform may
    # have taken the message and lost only the answer.
    return Result(outcome=Outcome.AMBIGUOUS, detail=short(f"answer lost: {exc}"))
