"""The simulator's admin port: counters, received references, and the fault switch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar
from urllib.parse import parse_qs

import orjson

from shared.errors import ValidationFailed
from simulator.http11 import Request, Response, json_response
from simulator.state import Counters


class FaultView(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


F = TypeVar("F", bound=FaultView)


class AdminApi(Generic[F]):
    """The admin port of a simulated platform; each kind (HTTP, SMSC) brings its own faults."""

    def __init__(
        self,
        *,
        counters: Counters,
        current_fault: Callable[[], F],
        apply_fault: Callable[[F], Awaitable[F]],
        parse: Callable[[object], F],
        extra: Callable[[Request], Response | None] | None = None,
    ) -> None:
        self._counters = counters
        self._current_fault = current_fault
        self._apply_fault = apply_fault
        self._parse = parse
        self._extra = extra

    async def handle(self, request: Request) -> Response:
        route = (request.method, request.path.rstrip("/") or "/")
        if route == ("GET", "/stats"):
            return json_response(200, self._counters.stats())
        if route == ("GET", "/references"):
            return self._references(request)
        if route == ("GET", "/faults"):
            return json_response(200, self._current_fault().as_dict())
        if route == ("POST", "/faults"):
            return await self._set_fault(request)
        if route == ("POST", "/reset"):
            self._counters.reset()
            return json_response(200, self._counters.stats())
        if route == ("GET", "/healthz"):
            return json_response(200, {"ok": True})
        if self._extra is not None and (answer := self._extra(request)) is not None:
            return answer
        known = {"/stats", "/references", "/faults", "/reset", "/healthz"}
        if route[1] in known:
            return json_response(405, {"error": f"{request.method} not allowed on {route[1]}"})
        return json_response(404, {"error": f"no such endpoint {request.path}"})

    def _references(self, request: Request) -> Response:
        # `?since=N` returns only what came after the first N, so a poller need not fetch everything again.
        raw = parse_qs(request.query).get("since", ["0"])[-1]
        if not raw.isdigit():
            return json_response(400, {"error": "since must be a whole number"})
        references = self._counters.references(int(raw))
        return json_response(200, {"references": references, "total": self._counters.unique})

    async def _set_fault(self, request: Request) -> Response:
        try:
            data = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return json_response(400, {"error": "body is not JSON"})
        try:
            fault = self._parse(data)
        except ValidationFailed as exc:
            return json_response(400, {"error": str(exc), "fields": exc.errors})
        applied = await self._apply_fault(fault)
        return json_response(200, applied.as_dict())
