"""Serves the two submit URLs, the drop-in APIs (`ingress.compat`) and the platforms' delivery reports
(`ingress.report_intake`) straight from ASGI; everything else goes to the FastAPI app.

Measured under load, FastAPI's per-request machinery (middleware stack, dependency solving, query
parsing) cost more CPU than the submit itself. The FastAPI routes of the same URLs stay, for the
OpenAPI document and for anyone mounting the bare app; both call `ingress.submission`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import orjson

from ingress import problems
from ingress.admin import AdminGate
from ingress.compat.common import CompatRequest
from ingress.compat.routes import DropIns
from ingress.problems import PROBLEM_TYPE
from ingress.report_intake import report_route, take_report
from ingress.request_body import ClientGone, DrainingApp, RequestBody, answer_after_body
from ingress.submission import BATCH_PATH, SINGLE_PATH, IncomingSubmit, Reply, Submissions
from shared.logs import get_logger

log = get_logger("ingress.api")

_REPORT_METHODS = frozenset({"GET", "POST"})
_PATHS = frozenset({SINGLE_PATH, BATCH_PATH, SINGLE_PATH + "/", BATCH_PATH + "/"})


class RelayApp:
    """The ASGI application uvicorn serves."""

    def __init__(
        self,
        *,
        api: Any,
        submissions: Submissions,
        drop_ins: DropIns,
        gate: AdminGate,
        drain_max_bytes: int,
    ) -> None:
        self.api = api
        self._framework = DrainingApp(api, limit_bytes=drain_max_bytes)
        self._submissions = submissions
        self._drop_ins = drop_ins
        self._gate = gate
        self._drain_max_bytes = drain_max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        headers: dict[bytes, bytes] = dict(scope["headers"])
        body = RequestBody(receive)
        refusal = self._gate.refusal(scope)
        if refusal is not None:
            send = await answer_after_body(send, body, headers, self._drain_max_bytes)
            await _send(send, 404, refusal, PROBLEM_TYPE, {})
            return
        if scope["method"] == "POST" and scope["path"] in _PATHS:
            pending = self._submit(scope, headers, body)
        elif (drop_in := self._drop_ins.handler(scope["method"], scope["path"])) is not None:
            pending = drop_in(CompatRequest.from_scope(scope, body.__aiter__()))
        elif scope["method"] in _REPORT_METHODS and (route := report_route(scope["path"])) is not None:
            query = scope["query_string"].decode("utf-8", "replace")
            pending = take_report(self.api.state.ingress, route, query, body.__aiter__())
        else:
            await self._framework(scope, receive, send)
            return
        await self._answer(send, pending, scope["path"], body, headers)

    def _submit(
        self, scope: dict[str, Any], headers: dict[bytes, bytes], body: RequestBody
    ) -> Awaitable[Reply]:
        def header(name: bytes) -> str | None:
            value = headers.get(name)
            return value.decode("latin-1") if value is not None else None

        request = IncomingSubmit(
            path=scope["path"].rstrip("/"),
            authorization=header(b"authorization"),
            idempotency_key=header(b"idempotency-key"),
            content_length=header(b"content-length"),
            body=body.__aiter__(),
            content_type=header(b"content-type"),
        )
        return self._submissions.handle(request)

    async def _answer(
        self, send: Any, pending: Awaitable[Reply], path: str, body: RequestBody, headers: dict[bytes, bytes]
    ) -> None:
        try:
            reply = await pending
        except ClientGone:
            return
        except Exception as exc:  # a bug must still answer as a problem, never hang the client
            log.error("request failed", path=path, error=repr(exc))
            failure = problems.problem_body(
                status=500,
                kind="internal",
                title="Internal error",
                detail="the request failed; nothing was accepted",
            )
            reply = Reply(status=500, body=orjson.dumps(failure), media_type=PROBLEM_TYPE)
        # An answer given before the whole body was read waits for it (see `ingress.request_body`).
        send = await answer_after_body(send, body, headers, self._drain_max_bytes)
        await _send(send, reply.status, reply.body, reply.media_type, reply.headers, reply.fields)


async def _send(
    send: Any,
    status: int,
    body: bytes,
    media_type: str,
    headers: dict[str, str],
    fields: list[tuple[bytes, bytes]] | None = None,
) -> None:
    raw = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    if fields:
        raw += fields
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
