"""RFC 9457 problem details (application/problem+json) for every refused request."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

PROBLEM_TYPE = "application/problem+json"
_BASE = "https://sms-ha-relay.invalid/problems/"


class ProblemError(Exception):
    """Raised inside a handler to answer with a problem."""

    def __init__(
        self,
        *,
        status: int,
        kind: str,
        title: str,
        detail: str,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.body = problem_body(status=status, kind=kind, title=title, detail=detail, errors=errors)
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return int(self.body["status"])

    def response(self) -> Response:
        return problem_response(self.body, headers=self.headers)


def problem_body(
    *, status: int, kind: str, title: str, detail: str, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": _BASE + kind, "title": title, "status": status, "detail": detail}
    if errors is not None:
        body["errors"] = errors
    return body


def problem_response(body: dict[str, Any], *, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=int(body["status"]), media_type=PROBLEM_TYPE, headers=headers
    )


def unauthorized(detail: str) -> ProblemError:
    return ProblemError(
        status=401,
        kind="unauthorized",
        title="Unauthorized",
        detail=detail,
        headers={"WWW-Authenticate": 'Bearer realm="relay"'},
    )


def invalid(errors: list[dict[str, str]], detail: str = "the message is not acceptable") -> ProblemError:
    return ProblemError(
        status=422, kind="invalid-message", title="Invalid message", detail=detail, errors=errors
    )


def malformed(detail: str) -> ProblemError:
    return ProblemError(
        status=400,
        kind="malformed-request",
        title="Malformed request",
        detail=detail,
        errors=[{"field": "", "message": detail}],
    )


def too_large(limit: int) -> ProblemError:
    return ProblemError(
        status=413,
        kind="request-too-large",
        title="Request too large",
        detail=f"the request body exceeds {limit} bytes",
        errors=[{"field": "", "message": f"at most {limit} bytes"}],
    )


def conflict(detail: str) -> ProblemError:
    return ProblemError(
        status=409,
        kind="idempotency-conflict",
        title="Idempotency-Key conflict",
        detail=detail,
        errors=[{"field": "Idempotency-Key", "message": detail}],
    )


def unavailable(detail: str) -> ProblemError:
    return ProblemError(
        status=503,
        kind="unavailable",
        title="Service unavailable",
        detail=detail,
        headers={"Retry-After": "1"},
    )


def not_found(detail: str) -> ProblemError:
    return ProblemError(status=404, kind="not-found", title="Not found", detail=detail)


def rate_limited(detail: str, retry_after_s: int | None) -> ProblemError:
    return ProblemError(
        status=429,
        kind="rate-limited",
        title="Too many requests",
        detail=detail + "; nothing was accepted",
        headers={"Retry-After": str(retry_after_s)} if retry_after_s is not None else None,
    )


def unsupported_media_type(content_type: str) -> ProblemError:
    detail = f"the body must be application/json, not {content_type[:64]!r}"
    return ProblemError(
        status=415,
        kind="unsupported-media-type",
        title="Unsupported media type",
        detail=detail,
        errors=[{"field": "Content-Type", "message": detail}],
        headers={"Accept-Post": "application/json"},
    )


def is_json(content_type: str | None) -> bool:
    """A missing Content-Type is taken as JSON (simple clients leave it out); any other must be JSON."""
    if content_type is None:
        return True
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )
