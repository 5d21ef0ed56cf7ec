"""The HTTP API: submit (single and batch), status, health, readiness, metrics, OpenAPI."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ingress import problems
from ingress.auth import bearer_key
from ingress.idempotency import MAX_KEY_CHARS, Answer, IdempotencyConflict, request_hash
from ingress.metrics import SUBMITS
from ingress.problems import ProblemError
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
from ingress.validation import ValidMessage, validate_message
from shared.errors import StoreUnavailable, ValidationFailed
from shared.logs import get_logger
from shared.settings import Settings
from shared.store.messages import MessageView, get_message

log = get_logger("ingress.api")

JSON = "application/json"
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {problems.PROBLEM_TYPE: {}}}
    for code in (400, 401, 409, 413, 422, 503)
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def create_app(settings: Settings, *, ingress: Ingress | None = None) -> FastAPI:
    """The app; it starts its own `Ingress` in its lifespan unless one (already started) is given."""
    owned = ingress is None
    runtime = ingress if ingress is not None else Ingress(settings=settings)
    limits = settings.ingress

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if owned:
            await runtime.start()
        try:
            yield
        finally:
            if owned:
                await runtime.stop()

    app = FastAPI(
        title="SMS HA relay",
        version="1",
        description="Accepts SMS over HTTP, makes each durable before answering, delivers through two sites.",
        lifespan=lifespan,
    )
    app.state.ingress = runtime

    @app.exception_handler(ProblemError)
    async def _problem(_: Request, exc: ProblemError) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        return problems.problem_response(
            problems.problem_body(
                status=exc.status_code, kind="http", title=str(exc.detail), detail=str(exc.detail)
            )
        )

    @app.exception_handler(RequestValidationError)
    async def _request_invalid(_: Request, exc: RequestValidationError) -> Response:
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        return problems.invalid(errors, "the request is not acceptable").response()

    async def tenant_of(request: Request) -> str:
        key = bearer_key(request.headers.get("authorization"))
        if key is None:
            SUBMITS.labels("unauthorized").inc()
            raise problems.unauthorized("an Authorization: Bearer <API key> header is required")
        try:
            tenant = await runtime.keys.tenant(key)
        except StoreUnavailable as exc:
            raise problems.unavailable("cannot check the API key right now") from exc
        if tenant is None:
            SUBMITS.labels("unauthorized").inc()
            raise problems.unauthorized("the API key is unknown or revoked")
        return tenant

    async def read_json(request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limits.max_request_bytes:
            raise problems.too_large(limits.max_request_bytes)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_request_bytes:
                raise problems.too_large(limits.max_request_bytes)
            chunks.append(chunk)
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError as exc:
            raise problems.malformed(f"the body is not valid JSON: {exc}") from None

    async def answer(request: Request, payload: Any, tenant: str, produce: Any) -> Answer:
        key = request.headers.get("idempotency-key")
        if key is None:
            result: Answer = await produce()
            return result
        if not key or len(key) > MAX_KEY_CHARS:
            raise problems.malformed(f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters")
        try:
            return await runtime.idempotency.run(
                tenant=tenant, key=key, digest=request_hash(request.url.path, payload), produce=produce
            )
        except IdempotencyConflict as exc:
            SUBMITS.labels("conflict").inc()
            raise problems.conflict(str(exc)) from None
        except StoreUnavailable as exc:
            raise problems.unavailable("cannot check the Idempotency-Key right now") from exc

    async def accept(tenant: str, messages: list[ValidMessage]) -> list[str]:
        try:
            return [a.id for a in await runtime.accept(tenant, messages)]
        except Exception as exc:
            log.error("could not make messages durable", error=repr(exc), count=len(messages))
            raise problems.unavailable(
                "the messages could not be made durable; nothing was accepted"
            ) from exc

    def respond(result: Answer, *, location: bool) -> Response:
        headers: dict[str, str] = {}
        if result.replayed:
            headers["Idempotent-Replayed"] = "true"
            SUBMITS.labels("duplicate").inc()
        if result.status_code >= 400:
            return problems.problem_response(result.body, headers=headers)
        if location:
            headers["Location"] = f"/v1/messages/{result.body['id']}"
        return _json(result.body, result.status_code, headers)

    @app.post(
        "/v1/messages",
        status_code=202,
        response_model=SubmitAccepted,
        responses=_PROBLEMS,
        summary="Submit one SMS",
        description="202 means durable. Idempotency-Key: repeats within ingress.idempotency_ttl_s get the "
        "first answer and send nothing.",
    )
    async def submit(request: Request) -> Response:
        tenant = await tenant_of(request)
        payload = await read_json(request)

        async def produce() -> Answer:
            try:
                message = validate_message(payload, limits)
            except ValidationFailed as exc:
                SUBMITS.labels("invalid").inc()
                return Answer(status_code=422, body=problems.invalid(exc.errors).body)
            (message_id,) = await accept(tenant, [message])
            return Answer(status_code=202, body={"id": message_id, "status": "accepted"})

        return respond(await answer(request, payload, tenant, produce), location=True)

    @app.post(
        "/v1/messages/batch",
        status_code=202,
        response_model=BatchAccepted,
        responses=_PROBLEMS,
        summary="Submit up to ingress.max_batch SMS",
        description="Valid items are accepted, invalid ones rejected with their errors (partial acceptance).",
    )
    async def submit_batch(request: Request) -> Response:
        tenant = await tenant_of(request)
        payload = await read_json(request)
        items = payload.get("messages") if isinstance(payload, dict) else None
        if not isinstance(items, list) or not items:
            SUBMITS.labels("invalid").inc()
            raise problems.invalid(
                [{"field": "messages", "message": "a non-empty list of messages is required"}],
                "the batch is not acceptable",
            )
        if len(items) > limits.max_batch:
            SUBMITS.labels("invalid").inc()
            raise problems.invalid(
                [{"field": "messages", "message": f"at most {limits.max_batch} messages per batch"}],
                f"the batch holds {len(items)} messages; at most {limits.max_batch} are allowed",
            )

        async def produce() -> Answer:
            valid: list[tuple[int, ValidMessage]] = []
            results: list[dict[str, Any]] = []
            all_errors: list[dict[str, str]] = []
            for index, item in enumerate(items):
                try:
                    valid.append((index, validate_message(item, limits, field_prefix=f"messages[{index}].")))
                except ValidationFailed as exc:
                    results.append({"index": index, "status": "rejected", "errors": exc.errors})
                    all_errors.extend(exc.errors)
            SUBMITS.labels("invalid").inc(len(results))
            if not valid:
                return Answer(
                    status_code=422,
                    body=problems.invalid(all_errors, "no message of the batch is acceptable").body,
                )
            ids = await accept(tenant, [m for _, m in valid])
            results += [
                {"index": index, "status": "accepted", "id": message_id}
                for (index, _), message_id in zip(valid, ids, strict=True)
            ]
            results.sort(key=lambda r: int(r["index"]))
            body = {"accepted": len(ids), "rejected": len(items) - len(ids), "results": results}
            return Answer(status_code=202, body=body)

        return respond(await answer(request, payload, tenant, produce), location=False)

    @app.get(
        "/v1/messages/{message_id}",
        response_model=MessageStatus,
        responses={404: {"model": Problem}, 401: {"model": Problem}},
        summary="Status and attempt history of one message (only its sender's tenant sees it)",
    )
    async def status(message_id: str, request: Request) -> Response:
        tenant = await tenant_of(request)
        try:
            async with runtime.sessions() as session:
                view = await get_message(session, message_id=message_id[:64], tenant=tenant)
        except Exception as exc:
            raise problems.unavailable("the store cannot be read right now") from exc
        if view is None:
            raise problems.not_found(f"no message {message_id!r} of this tenant")
        return _json(_status_body(view))

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> Response:
        return _json({"alive": True})

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness}},
        summary="Ready when the broker confirms publishes",
        description="The spool is a fallback, not a reason to send traffic to this process.",
    )
    async def readyz() -> Response:
        body = runtime.readiness()
        body["store"] = "ok" if await runtime.store_ok() else "down"
        ready = body["broker"] == "ok"
        return _json({"ready": ready, **body}, 200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics of this process")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    _document_request_bodies(app)
    return app


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
                "detail": a.detail,
                "at": a.at.isoformat(),
                "latency_ms": a.latency_ms,
                "possible_duplicate": a.possible_duplicate,
            }
            for a in view.history
        ],
    }


def _document_request_bodies(app: FastAPI) -> None:
    """Request bodies are parsed by hand (no pydantic on the hot path); the document still shows them."""
    bodies: dict[tuple[str, str], type[BaseModel]] = {
        ("/v1/messages", "post"): SubmitRequest,
        ("/v1/messages/batch", "post"): BatchRequest,
    }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _, definitions = models_json_schema(
            [(model, "validation") for model in bodies.values()],
            ref_template="#/components/schemas/{model}",
        )
        schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions.get("$defs", {}))
        for (path, method), model in bodies.items():
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

    app.openapi = openapi  # type: ignore[method-assign]
