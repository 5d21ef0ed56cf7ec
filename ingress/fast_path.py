"""Serves the two submit URLs straight from ASGI; everything else goes to the FastAPI app.

Measured under load, FastAPI's per-request machinery (middleware stack, dependency solving, query
parsing) cost more CPU than the submit itself. The FastAPI routes of the same URLs stay, for the
OpenAPI document and for anyone mounting the bare app; both call `ingress.submission`.
"""

from __future__ import annotations

from typing import Any

import orjson

from ingress import problems
from ingress.admin import AdminGate
from ingress.problems import PROBLEM_TYPE
from ingress.request_body import ClientGone, DrainingApp, RequestBody, answer_after_body
from ingress.submission import BATCH_PATH, SINGLE_PATH, IncomingSubmit, Submissions
from shared.logs import get_logger

log = get_logger("ingress.api")

_PATHS = frozenset({SINGLE_PATH, BATCH_PATH, SINGLE_PATH + "/", BATCH_PATH + "/"})


class RelayApp:
    """The ASGI application uvicorn serves."""

    def __init__(self, *, api: Any, submissions: Submissions, gate: AdminGate, drain_max_bytes: int) -> None:
        self.api = api
        self._framework = DrainingApp(api, limit_bytes=drain_max_bytes)
        self._submissions = submissions
        self._gate = gate
        self._drain_max_bytes = drain_max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            refusal = self._gate.refusal(scope)
            if refusal is not None:
                unread = RequestBody(receive)
                send = await answer_after_body(send, unread, dict(scope["headers"]), self._drain_max_bytes)
                await _send(send, 404, refusal, PROBLEM_TYPE, {})
                return
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in _PATHS:
            await self._framework(scope, receive, send)
            return
        headers: dict[bytes, bytes] = dict(scope["headers"])

        def header(name: bytes) -> str | None:
            value = headers.get(name)
            return value.decode("latin-1") if value is not None else None

        body = RequestBody(receive)
        request = IncomingSubmit(
            path=scope["path"].rstrip("/"),
            authorization=header(b"authorization"),
            idempotency_key=header(b"idempotency-key"),
            content_length=header(b"content-length"),
            body=body.__aiter__(),
            content_type=header(b"content-type"),
        )
        try:
            reply = await self._submissions.handle(request)
        except ClientGone:
            return
        except Exception as exc:  # a bug must still answer as a problem, never hang the client
            log.error("submit failed", error=repr(exc))
            failure = problems.problem_body(
                status=500,
                kind="internal",
                title="Internal error",
                detail="the request failed; nothing was accepted",
            )
            send = await answer_after_body(send, body, headers, self._drain_max_bytes)
            await _send(send, 500, orjson.dumps(failure), PROBLEM_TYPE, {})
            return
        send = await answer_after_body(send, body, headers, self._drain_max_bytes)
        await _send(send, reply.status, reply.body, reply.media_type, reply.headers)


async def _send(send: Any, status: int, body: bytes, media_type: str, headers: dict[str, str]) -> None:
    raw = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
