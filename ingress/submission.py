"""The submit endpoints' logic, free of any web framework: headers and body in, status and body out.

Both the FastAPI routes (which document the API) and the ASGI fast path (`ingress.fast_path`, which
serves the two submit URLs without the framework's per-request machinery) call it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from ingress import problems
from ingress.auth import authenticate
from ingress.callback_check import CallbackCheck
from ingress.idempotency import MAX_KEY_CHARS, Answer, IdempotencyConflict, Produce, request_hash
from ingress.metrics import SUBMITS
from ingress.problems import PROBLEM_TYPE, ProblemError
from ingress.service import Ingress
from ingress.tenant_guard import RateLimited
from ingress.validation import ValidMessage, validate_message
from shared.errors import StoreUnavailable, ValidationFailed
from shared.logs import get_logger
from shared.model import new_message_ids
from shared.settings import IngressSettings, Settings

log = get_logger("ingress.api")

JSON = "application/json"
SINGLE_PATH = "/v1/messages"
BATCH_PATH = "/v1/messages/batch"


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    status: int
    body: bytes
    media_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    # Fields already encoded for the wire (lower-case names): the ones on every answer, made cheaply.
    fields: list[tuple[bytes, bytes]] = field(default_factory=list)


@dataclass(frozen=True, slots=True, kw_only=True)
class IncomingSubmit:
    path: str
    authorization: str | None
    idempotency_key: str | None
    content_length: str | None
    body: AsyncIterator[bytes]
    content_type: str | None = None


class BodyTooLarge(Exception):
    """A request body over ingress.max_request_bytes, declared or read."""


async def read_body(body: AsyncIterator[bytes], *, declared: str | None, limit_bytes: int) -> bytes:
    """A submit's whole body, whatever API it comes through; `BodyTooLarge` past `limit_bytes`."""
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise BodyTooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in body:
        size += len(chunk)
        if size > limit_bytes:
            raise BodyTooLarge()
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def submit_limits(settings: Settings) -> IngressSettings:
    """The limits a submitted message is validated against, whatever API it comes through."""
    # A message longer than every site carries whole is refused here (422 naming its segments).
    carried = max(settings.segment_limits.values())
    return settings.ingress.model_copy(update={"max_segments": carried})


class Submissions:
    def __init__(self, *, ingress: Ingress) -> None:
        self._ingress = ingress
        self._limits = submit_limits(ingress.settings)
        self._callbacks = CallbackCheck(ingress.settings.callbacks)

    async def handle(self, request: IncomingSubmit) -> Reply:
        tenant: str | None = None
        try:
            tenant = await self._tenant(request.authorization)
            if not problems.is_json(request.content_type):
                raise problems.unsupported_media_type(request.content_type or "")
            payload = await self._read_json(request)
            if request.path == BATCH_PATH:
                produce = self._batch(tenant, payload)
                count, location = len(payload["messages"]), False
            else:
                produce = self._single(tenant, payload)
                count, location = 1, True
            try:
                answer = await self._answer(request, payload, tenant, produce, count)
            except RateLimited as exc:
                raise problems.rate_limited(exc.detail, exc.retry_after_s) from None
            reply = self._reply(answer, location=location)
        except ProblemError as problem:
            reply = Reply(
                status=problem.status,
                body=orjson.dumps(problem.body),
                media_type=PROBLEM_TYPE,
                headers=dict(problem.headers),
            )
        if tenant is not None:
            reply.fields.extend(self._ingress.guard.fields(tenant))
        return reply

    async def _tenant(self, authorization: str | None) -> str:
        try:
            return await authenticate(self._ingress.keys, authorization)
        except ProblemError as problem:
            if problem.status == 401:
                SUBMITS.labels("unauthorized").inc()
            raise

    async def _read_json(self, request: IncomingSubmit) -> Any:
        limit = self._limits.max_request_bytes
        try:
            body = await read_body(request.body, declared=request.content_length, limit_bytes=limit)
        except BodyTooLarge:
            raise problems.too_large(limit) from None
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise problems.malformed(f"the body is not valid JSON: {exc}") from None

    async def _answer(
        self, request: IncomingSubmit, payload: Any, tenant: str, produce: Produce, count: int
    ) -> Answer:
        key = request.idempotency_key
        if key is None:
            return await produce(new_message_ids(count), False)
        if not key or len(key) > MAX_KEY_CHARS:
            raise problems.malformed(f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters")
        try:
            return await self._ingress.idempotency.run(
                tenant=tenant,
                key=key,
                digest=request_hash(request.path, payload),
                message_count=count,
                produce=produce,
            )
        except IdempotencyConflict as exc:
            SUBMITS.labels("conflict").inc()
            raise problems.conflict(str(exc)) from None
        except StoreUnavailable as exc:
            raise problems.unavailable("cannot check the Idempotency-Key right now") from exc

    async def _accept(
        self, tenant: str, messages: list[ValidMessage], message_ids: list[str], resent: bool
    ) -> list[str]:
        try:
            accepted = await self._ingress.accept(tenant, messages, message_ids=message_ids, resent=resent)
            return [a.id for a in accepted]
        except RateLimited:
            raise
        except Exception as exc:
            log.error("could not make messages durable", error=repr(exc), count=len(messages))
            raise problems.unavailable(
                "the messages could not be made durable; nothing was accepted"
            ) from exc

    def _single(self, tenant: str, payload: Any) -> Produce:
        async def produce(message_ids: list[str], resent: bool) -> Answer:
            try:
                message = validate_message(payload, self._limits)
                if message.callback_url is not None:  # most name none: no coroutine to run for them
                    await self._check_callback(message.callback_url, "")
            except ValidationFailed as exc:
                SUBMITS.labels("invalid").inc()
                return Answer(status_code=422, body=problems.invalid(exc.errors).body)
            (message_id,) = await self._accept(tenant, [message], message_ids, resent)
            return Answer(status_code=202, body={"id": message_id, "status": "accepted"})

        return produce

    def _batch(self, tenant: str, payload: Any) -> Produce:
        items = payload.get("messages") if isinstance(payload, dict) else None
        max_batch = self._limits.max_batch
        if not isinstance(items, list) or not items:
            SUBMITS.labels("invalid").inc()
            raise problems.invalid(
                [{"field": "messages", "message": "a non-empty list of messages is required"}],
                "the batch is not acceptable",
            )
        if len(items) > max_batch:
            SUBMITS.labels("invalid").inc()
            raise problems.invalid(
                [{"field": "messages", "message": f"at most {max_batch} messages per batch"}],
                f"the batch holds {len(items)} messages; at most {max_batch} are allowed",
            )

        # One id per item, by index: a repeat of the batch gives each item the id it had.
        async def produce(message_ids: list[str], resent: bool) -> Answer:
            valid: list[tuple[int, ValidMessage]] = []
            results: list[dict[str, Any]] = []
            all_errors: list[dict[str, str]] = []
            for index, item in enumerate(items):
                prefix = f"messages[{index}]."
                try:
                    message = validate_message(item, self._limits, field_prefix=prefix)
                    if message.callback_url is not None:
                        await self._check_callback(message.callback_url, prefix)
                    valid.append((index, message))
                except ValidationFailed as exc:
                    results.append({"index": index, "status": "rejected", "errors": exc.errors})
                    all_errors.extend(exc.errors)
            SUBMITS.labels("invalid").inc(len(results))
            if not valid:
                return Answer(
                    status_code=422,
                    body=problems.invalid(all_errors, "no message of the batch is acceptable").body,
                )
            ids = await self._accept(
                tenant, [m for _, m in valid], [message_ids[i] for i, _ in valid], resent
            )
            results += [
                {"index": index, "status": "accepted", "id": message_id}
                for (index, _), message_id in zip(valid, ids, strict=True)
            ]
            results.sort(key=lambda r: int(r["index"]))
            body = {"accepted": len(ids), "rejected": len(items) - len(ids), "results": results}
            return Answer(status_code=202, body=body)

        return produce

    async def _check_callback(self, url: str, prefix: str) -> None:
        errors = await self._callbacks.errors(url, field_prefix=prefix)
        if errors:
            raise ValidationFailed(errors)

    def _reply(self, answer: Answer, *, location: bool) -> Reply:
        headers: dict[str, str] = {}
        if answer.replayed:
            headers["Idempotent-Replayed"] = "true"
            SUBMITS.labels("duplicate").inc()
        if answer.status_code >= 400:
            return Reply(
                status=answer.status_code,
                body=orjson.dumps(answer.body),
                media_type=PROBLEM_TYPE,
                headers=headers,
            )
        if location:
            headers["Location"] = f"{SINGLE_PATH}/{answer.body['id']}"
        return Reply(status=answer.status_code, body=orjson.dumps(answer.body), headers=headers)
