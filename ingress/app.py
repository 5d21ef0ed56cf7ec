"""The HTTP API: submit (single and batch), status, health, readiness, metrics, OpenAPI."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ingress import problems
from ingress.admin import AdminGate, add_docs
from ingress.auth import authenticate
from ingress.compat.cm import PATH as CM_PATH
from ingress.compat.routes import DropIns
from ingress.compat.routes import router as drop_in_router
from ingress.compat.schemas import CmRequest
from ingress.fast_path import RelayApp
from ingress.idempotency import MAX_KEY_CHARS
from ingress.problems import ProblemError
from ingress.public_texts import public_detail
from ingress.report_intake import router as report_router
from ingress.schemas import (
    BatchAccepted,
    BatchRequest,
    MessageStatus,
    Problem,
    Readiness,
    SubmitAccepted,
    SubmitRequest,
)
from ingress.service import Ingress
from ingress.submission import BATCH_PATH, SINGLE_PATH, IncomingSubmit, Submissions
from shared.gc_tuning import freeze_startup_objects
from shared.logs import get_logger
from shared.settings import Settings
from shared.store.messages import MessageView, get_message

log = get_logger("ingress.api")

JSON = "application/json"
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {problems.PROBLEM_TYPE: {}}}
    for code in (400, 401, 409, 413, 415, 422, 429, 503)
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def create_app(settings: Settings, *, ingress: Ingress | None = None) -> RelayApp:
    """The ASGI app (the FastAPI app behind the submit fast path); it starts its own `Ingress` in its
    lifespan unless one (already started) is given."""
    runtime = ingress if ingress is not None else Ingress(settings=settings)
    app = FastAPI(
        title="SMS HA relay",
        version="1",
        description="Accepts SMS over HTTP, makes each durable before answering, delivers through two sites.",
        lifespan=_lifespan,
        docs_url=None,
        redoc_url=None,
        exception_handlers={
            ProblemError: _problem,
            StarletteHTTPException: _http_error,
            RequestValidationError: _request_invalid,
        },
    )
    app.state.ingress = runtime
    app.state.owns_ingress = ingress is None
    app.state.submissions = Submissions(ingress=runtime)
    app.state.drop_ins = DropIns(ingress=runtime)
    app.include_router(router)
    app.include_router(drop_in_router)
    app.include_router(report_router)
    add_docs(app)
    app.openapi = functools.partial(_openapi, app)  # type: ignore[method-assign]
    return RelayApp(
        api=app,
        submissions=app.state.submissions,
        drop_ins=app.state.drop_ins,
        gate=AdminGate(settings),
        drain_max_bytes=settings.guard.drain_max_bytes,
    )


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    runtime: Ingress = app.state.ingress
    owned: bool = app.state.owns_ingress
    if owned:
        await runtime.start()
    freeze_startup_objects()
    try:
        yield
    finally:
        if owned:
            await runtime.stop()


async def _problem(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return exc.response()


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    return problems.problem_response(
        problems.problem_body(
            status=exc.status_code, kind="http", title=str(exc.detail), detail=str(exc.detail)
        )
    )


async def _request_invalid(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
    return problems.invalid(errors, "the request is not acceptable").response()


def runtime_of(request: Request) -> Ingress:
    runtime: Ingress = request.app.state.ingress
    return runtime


async def tenant_of(request: Request, runtime: Annotated[Ingress, Depends(runtime_of)]) -> str:
    return await authenticate(runtime.keys, request.headers.get("authorization"))


async def _framework_submit(request: Request) -> Response:
    submissions: Submissions = request.app.state.submissions
    reply = await submissions.handle(
        IncomingSubmit(
            path=request.url.path.rstrip("/"),
            authorization=request.headers.get("authorization"),
            idempotency_key=request.headers.get("idempotency-key"),
            content_length=request.headers.get("content-length"),
            body=request.stream(),
            content_type=request.headers.get("content-type"),
        )
    )
    response = Response(
        reply.body, status_code=reply.status, media_type=reply.media_type, headers=reply.headers
    )
    response.raw_headers.extend(reply.fields)
    return response


router = APIRouter()


@router.post(
    SINGLE_PATH,
    status_code=202,
    response_model=SubmitAccepted,
    responses=_PROBLEMS,
    summary="Submit one SMS",
    description="202 means durable. Idempotency-Key: repeats within ingress.idempotency_ttl_s get the "
    "first answer and send nothing.",
)
async def submit(request: Request) -> Response:
    return await _framework_submit(request)


@router.post(
    BATCH_PATH,
    status_code=202,
    response_model=BatchAccepted,
    responses=_PROBLEMS,
    summary="Submit up to ingress.max_batch SMS",
    description="Valid items are accepted, invalid ones rejected with their errors (partial acceptance).",
)
async def submit_batch(request: Request) -> Response:
    return await _framework_submit(request)


@router.get(
    "/v1/messages/{message_id}",
    response_model=MessageStatus,
    responses={404: {"model": Problem}, 401: {"model": Problem}},
    summary="Status and attempt history of one message (only its sender's tenant sees it)",
)
async def status(
    message_id: str,
    tenant: Annotated[str, Depends(tenant_of)],
    runtime: Annotated[Ingress, Depends(runtime_of)],
) -> Response:
    try:
        async with runtime.sessions() as session:
            view = await get_message(session, message_id=message_id[:64], tenant=tenant)
    except Exception as exc:
        raise problems.unavailable("the store cannot be read right now") from exc
    if view is None:
        raise problems.not_found(f"no message {message_id!r} of this tenant")
    return _json(_status_body(view))


@router.get("/healthz", summary="The process is alive")
async def healthz() -> Response:
    return _json({"alive": True})


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness}},
    summary="Ready when the broker confirms publishes",
    description="The spool is a fallback, not a reason to send traffic to this process.",
)
async def readyz(runtime: Annotated[Ingress, Depends(runtime_of)]) -> Response:
    body = runtime.readiness()
    body["store"] = "ok" if await runtime.store_ok() else "down"
    ready = body["broker"] == "ok"
    return _json({"ready": ready, **body}, 200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics of this process")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _status_body(view: MessageView) -> dict[str, Any]:
    return {
        "id": view.id,
        "status": view.status,
        "site": view.site,
        "to": view.to_number,
        "from": view.sender,
        "reference": view.client_reference,
        "segments": view.segments,
        "encoding": view.encoding,
        "attempts": view.attempts,
        "possible_duplicates": view.ambiguous,
        "accepted_at": view.accepted_at.isoformat(),
        "updated_at": view.updated_at.isoformat(),
        "expires_at": view.expires_at.isoformat(),
        "history": [
            {
                "site": a.site,
                "attempt": a.attempt,
                "outcome": a.outcome,
                "detail": public_detail(a.outcome, a.detail),
                "at": a.at.isoformat(),
                "latency_ms": a.latency_ms,
                "possible_duplicate": a.possible_duplicate,
            }
            for a in view.history
        ],
        "reports": [
            {
                "site": r.site,
                "attempt": r.attempt,
                "status": r.state,
                "platform_status": r.platform_status,
                "error_code": r.error_code,
                "at": r.at.isoformat() if r.at is not None else None,
                "received_at": r.received_at.isoformat(),
            }
            for r in view.reports
        ],
    }


# Request bodies are parsed by hand (no pydantic on the hot path); the document still shows them.
_REQUEST_BODIES: dict[tuple[str, str], type[BaseModel]] = {
    (SINGLE_PATH, "post"): SubmitRequest,
    (BATCH_PATH, "post"): BatchRequest,
    (CM_PATH, "post"): CmRequest,
}


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    _, definitions = models_json_schema(
        [(model, "validation") for model in _REQUEST_BODIES.values()],
        ref_template="#/components/schemas/{model}",
    )
    schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions.get("$defs", {}))
    for (path, method), model in _REQUEST_BODIES.items():
        schema["paths"][path][method]["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
        schema["paths"][path][method]["parameters"] = [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "maxLength": MAX_KEY_CHARS},
            }
        ]
    app.openapi_schema = schema
    return schema
