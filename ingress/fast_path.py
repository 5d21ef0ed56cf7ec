"""Serves the two submit URLs straight from ASGI; everything else goes to the FastAPI app.

Measured under load, FastAPI's per-request machinery (middleware stack, dependency solving, query
parsing) cost more CPU than the submit itself. The FastAPI routes of the same URLs stay, for the
OpenAPI document and for anyone mounting the bare app; both call `ingress.submission`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI

from ingress import problems
from ingress.compat.routes import DropIns
from ingress.problems import PROBLEM_TYPE
from ingress.submission import BATCH_PATH, SINGLE_PATH, IncomingSubmit, Submissions
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
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in _PATHS:
            drop_in = (
                self._drop_ins.handler(scope["method"], scope["path"]) if scope["type"] == "http" else None
            )
            if drop_in is not None:
                await self._drop_ins.serve(drop_in, scope, receive, send)
            else:
                await self.api(scope, receive, send)
            return
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
        try:
            reply = await self._submissions.handle(request)
        except ClientGone:
            return
        except Exception as exc:  # a bug must still answer as a problem, never hang the client
            log.error("submit failed", error=repr(exc))
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
