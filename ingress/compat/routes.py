"""Where the drop-in APIs are found: by URL, for the submit fast path (`ingress.fast_path`) that serves them
straight from ASGI, and as FastAPI routes that document them and serve the bare app the same way."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from ingress.compat import cm, kannel, twilio
from ingress.compat.common import CompatRequest, Handler
from ingress.compat.schemas import (
    IDEMPOTENCY_KEY,
    KANNEL_PARAMETERS,
    TWILIO_FORM,
    CmResponse,
    TwilioErrorObject,
    TwilioMessage,
)
from ingress.service import Ingress


class DropIns:
    """The three drop-in APIs of one ingress, found by the URL they answer."""

    def __init__(self, *, ingress: Ingress) -> None:
        self.cm = cm.CmApi(ingress=ingress)
        self.kannel = kannel.KannelApi(ingress=ingress)
        self.twilio = twilio.TwilioApi(ingress=ingress)

    def handler(self, method: str, path: str) -> Handler | None:
        if path.rstrip("/") == cm.PATH:
            return self.cm.submit if method == "POST" else None
        if path == kannel.PATH:
            return self.kannel.sendsms if method in ("GET", "POST") else None
        if path.startswith(twilio.PREFIX):
            return self.twilio.handle
        return None


async def _framework(request: Request) -> Response:
    drop_ins: DropIns = request.app.state.drop_ins
    handler = drop_ins.handler(request.method, request.url.path)
    assert handler is not None  # the routes below are the handlers' own URLs
    reply = await handler(CompatRequest.from_scope(request.scope, request.stream()))
    response = Response(
        reply.body, status_code=reply.status, media_type=reply.media_type, headers=reply.headers
    )
    response.raw_headers.extend(reply.fields)
    return response


router = APIRouter(tags=["drop-in APIs"])


@router.post(
    cm.PATH,
    response_model=CmResponse,
    responses={400: {"model": CmResponse}, 503: {"model": CmResponse}},
    summary="CM's HTTP JSON gateway: one relay message per recipient",
    description="Point a CM client's gateway URL here; the product token is a relay API key. 200 when any "
    "message was created (rejected ones listed with CM's codes), 400 when none was.",
)
async def cm_submit(request: Request) -> Response:
    return await _framework(request)


_KANNEL_DOC: dict[str, Any] = {
    "summary": "Kannel's sendsms: 202 `0: Accepted for delivery` once durable",
    "description": "username is the tenant, password its API key; answers are Kannel's texts. POST takes "
    "the same fields form-encoded, or Kannel's own text/plain body with X-Kannel-* headers.",
    "responses": {202: {"content": {"text/html": {}}}, 400: {}, 403: {}, 503: {}},
}


@router.get(kannel.PATH, **_KANNEL_DOC, openapi_extra={"parameters": [*KANNEL_PARAMETERS, IDEMPOTENCY_KEY]})
async def kannel_sendsms(request: Request) -> Response:
    return await _framework(request)


@router.post(kannel.PATH, **_KANNEL_DOC, openapi_extra={"parameters": [IDEMPOTENCY_KEY]})
async def kannel_sendsms_post(request: Request) -> Response:
    return await _framework(request)


@router.post(
    f"{twilio.PREFIX}{{AccountSid}}/Messages.json",
    status_code=201,
    response_model=TwilioMessage,
    responses={400: {"model": TwilioErrorObject}, 401: {"model": TwilioErrorObject}},
    summary="Twilio's Messages API: create a message",
    description="HTTP Basic auth: the tenant's account SID and one of its API keys.",
    openapi_extra={**TWILIO_FORM, "parameters": [IDEMPOTENCY_KEY]},
)
async def twilio_create(request: Request, AccountSid: str) -> Response:
    del AccountSid  # documented here; the handler reads the path itself
    return await _framework(request)


@router.get(
    f"{twilio.PREFIX}{{AccountSid}}/Messages/{{Sid}}.json",
    response_model=TwilioMessage,
    responses={401: {"model": TwilioErrorObject}, 404: {"model": TwilioErrorObject}},
    summary="Twilio's Messages API: fetch a message, its status mapped onto Twilio's",
)
async def twilio_fetch(request: Request, AccountSid: str, Sid: str) -> Response:
    del AccountSid, Sid  # documented here; the handler reads the path itself
    return await _framework(request)
