"""A stand-in for the adapters' HTTP client in unit tests: records requests, answers through a handler."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from shared.http1 import HttpAnswer


@dataclass(frozen=True)
class SentRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.target).query, keep_blank_values=True).items()}

    @property
    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


# A handler answers a request or raises a TransportFailure (NotSent / AnswerLost).
Handler = Callable[[SentRequest], HttpAnswer | Awaitable[HttpAnswer]]


@dataclass
class FakeHttp:
    handler: Handler
    sent: list[SentRequest] = field(default_factory=list)
    closed: bool = False

    async def request(
        self, method: str, target: str, *, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> HttpAnswer:
        request = SentRequest(method=method, target=target, headers=dict(headers or []), body=body)
        self.sent.append(request)
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            return await answer
        return answer

    async def aclose(self) -> None:
        self.closed = True


def answer(status: int, body: bytes | str = b"") -> HttpAnswer:
    return HttpAnswer(status=status, body=body.encode() if isinstance(body, str) else body)
