"""Serves the two submit URLs and the drop-in APIs (`ingress.compat`) straight from ASGI; everything else
goes to the FastAPI app.

Measured under load, FastAPI's per-request machinery (middleware stack, dependency solving, query
parsing) cost more CPU than the submit itself. The FastAPI routes of the same URLs stay, for the
OpenAPI document and for anyone mounting the bare app; both call `ingress.submission`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any

import orjson
from fastapi import FastAPI

from ingress import problems
from ingress.compat.common import CompatRequest
from ingress.compat.routes import DropIns
from ingress.problems import PROBLEM_TYPE
from ingress.submission import BATCH_PATH, SINGLE_PATH, IncomingSubmit, Reply, Submissions
from shared.logs import get_logger

log = get_logger("ingress.api")

_PATHS = frozenset({SINGLE_PATH, BATCH_PATH, SINGLE_PATH + "/", BATCH_PATH + "/"})


class ClientGone(Exception):
    """The client disconnected before its request body was complete."""


class RelayApp:
    """The ASGI application uvicorn serves."""

    def __init__(self, *, api: FastAPI, submissions: Submissions, drop_ins: DropIns) -> None:
        self.api = api
        self._submissions = submissions
        self._drop_ins = drop_ins

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if scope["method"] == "POST" and scope["path"] in _PATHS:
                await _answer(send, self._submit(scope, receive), scope["path"])
                return
            drop_in = self._drop_ins.handler(scope["method"], scope["path"])
            if drop_in is not None:
                await _answer(send, drop_in(CompatRequest.from_scope(scope, _body(receive))), scope["path"])
                return
        await self.api(scope, receive, send)

    def _submit(self, scope: dict[str, Any], receive: Any) -> Awaitable[Reply]:
        headers: dict[bytes, bytes] = dict(scope["headers"])

        def header(name: bytes) -> str | None:
            value = headers.get(name)
            return value.decode("latin-1") if value is not None else None

        request = IncomingSubmit(
            path=scope["path"].rstrip("/"),
            authorization=header(b"authorization"),
            idempotency_key=header(b"idempotency-key"),
            content_length=header(b"content-length"),
            body=_body(receive),
        )
        return self._submissions.handle(request)


async def _answer(send: Any, pending: Awaitable[Reply], path: str) -> None:
    try:
        reply = await pending
    except ClientGone:
        return
    except Exception as exc:  # a bug must still answer as a problem, never hang the client
        log.error("request failed", path=path, error=repr(exc))
        body = problems.problem_body(
            status=500,
            kind="internal",
            title="Internal error",
            detail="the request failed; nothing was accepted",
        )
        await _send(send, 500, orjson.dumps(body), PROBLEM_TYPE, {})
        return
    await _send(send, reply.status, reply.body, reply.media_type, reply.headers)


async def _body(receive: Any) -> AsyncIterator[bytes]:
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            raise ClientGone()
        chunk = event.get("body", b"")
        if chunk:
            yield chunk
        if not event.get("more_body", False):
            return


async def _send(send: Any, status: int, body: bytes, media_type: str, headers: dict[str, str]) -> None:
    raw = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
