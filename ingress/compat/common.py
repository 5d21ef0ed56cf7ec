"""What the drop-in APIs share: the request as it arrives, the tenant behind a key, and the one durable
path of `/v1/messages` (validation, Idempotency-Key, `Ingress.accept`, metrics)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from prometheus_client import Counter

from ingress.idempotency import MAX_KEY_CHARS, Answer, IdempotencyConflict, Produce, request_hash
from ingress.metrics import SUBMITS
from ingress.service import Ingress
from ingress.submission import BodyTooLarge, Reply, read_body, submit_limits
from ingress.tenant_guard import RateLimited
from ingress.validation import ValidMessage, validate_message
from shared.errors import StoreUnavailable
from shared.logs import get_logger
from shared.model import new_message_ids

log = get_logger("ingress.compat")

API_SUBMITS = Counter(
    "relay_ingress_api_submits_total",
    "Messages submitted through a drop-in API (cm, kannel, twilio), by result: queued, spooled, invalid, "
    "unsupported, unauthorized (requests), duplicate (replayed requests), conflict, unavailable.",
    ["api", "result"],
)
RESULTS = (
    "queued",
    "spooled",
    "invalid",
    "unsupported",
    "unauthorized",
    "duplicate",
    "conflict",
    "unavailable",
    "rate-limited",
)
# The native counter counts every submit whatever its API; accepted ones are counted by `Ingress.accept`.
_NATIVE_RESULTS = {
    "invalid": "invalid",
    "unsupported": "invalid",
    "unauthorized": "unauthorized",
    "duplicate": "duplicate",
    "conflict": "conflict",
}

Handler = Callable[["CompatRequest"], Awaitable[Reply]]


@dataclass(frozen=True, slots=True, kw_only=True)
class CompatRequest:
    method: str
    path: str
    query: bytes  # the raw query string
    headers: Mapping[bytes, bytes]  # lower-case names, as ASGI gives them
    body: AsyncIterator[bytes]

    @classmethod
    def from_scope(cls, scope: Mapping[str, Any], body: AsyncIterator[bytes]) -> CompatRequest:
        return cls(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b""),
            headers=dict(scope["headers"]),
            body=body,
        )

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None


class Refused(Exception):
    """The request as a whole is refused before any message is taken; each API answers in its own words."""

    UNAVAILABLE = "unavailable"
    CONFLICT = "conflict"
    TOO_LARGE = "too-large"
    BAD_KEY = "bad-idempotency-key"
    RATE_LIMITED = "rate-limited"

    def __init__(self, kind: str, detail: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else {}


def form_fields(text: str, *, encoding: str) -> dict[str, str]:
    """The fields of a query string or form body, the first of a repeated name winning, blank values kept:
    what urllib's parse_qsl gives, in a fraction of its time (most fields need no unquoting at all, and
    parse_qsl's generality was a visible share of a submit)."""
    fields: dict[str, str] = {}
    for pair in text.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            fields.setdefault(_unquoted(name, encoding), _unquoted(value, encoding))
    return fields


def _unquoted(text: str, encoding: str) -> str:
    return unquote_plus(text, encoding) if "%" in text or "+" in text else text


def international(number: str) -> str:
    """CM and Kannel clients write international numbers with a leading 00; the native API's parser
    reads them as national numbers of ingress.default_region unless they start with +."""
    number = number.strip()
    return "+" + number[2:] if number.startswith("00") else number


class Intake:
    """One drop-in API's way into the durable submit path of the native API."""

    def __init__(self, *, ingress: Ingress, api: str) -> None:
        self.ingress = ingress
        self.limits = submit_limits(ingress.settings)
        self._counters = {result: API_SUBMITS.labels(api, result) for result in RESULTS}
        self._native = {result: SUBMITS.labels(native) for result, native in _NATIVE_RESULTS.items()}

    def count(self, result: str, amount: int = 1) -> None:
        if amount:
            self._counters[result].inc(amount)
            native = self._native.get(result)
            if native is not None:
                native.inc(amount)

    async def tenant(self, key: str | None) -> str | None:
        """The tenant of an API key; None (and counted) for a missing, unknown or revoked one."""
        try:
            tenant = await self.ingress.keys.tenant(key) if key else None
        except StoreUnavailable as exc:
            self.count("unavailable")
            raise Refused(Refused.UNAVAILABLE, "cannot check the API key right now") from exc
        if tenant is None:
            self.count("unauthorized")
        return tenant

    async def read_body(self, request: CompatRequest) -> bytes:
        limit = self.limits.max_request_bytes
        try:
            return await read_body(
                request.body, declared=request.header(b"content-length"), limit_bytes=limit
            )
        except BodyTooLarge:
            raise Refused(Refused.TOO_LARGE, f"the request body exceeds {limit} bytes") from None

    def check(self, fields: dict[str, Any]) -> ValidMessage:
        """The native API's validation of one message (`to`, `from`, `body`, `reference`, `validity_s`);
        `ValidationFailed` names each bad field by its native name."""
        return validate_message(fields, self.limits)

    async def once(
        self, request: CompatRequest, *, tenant: str, payload: Any, message_count: int, produce: Produce
    ) -> Answer:
        """`produce`'s answer under `message_count` new message ids, or with an Idempotency-Key the first
        answer to that key (and nothing sent), as on `/v1/messages`."""
        key = request.header(b"idempotency-key")
        if key is None:
            return await produce(new_message_ids(message_count), False)
        if not key or len(key) > MAX_KEY_CHARS:
            raise Refused(Refused.BAD_KEY, f"Idempotency-Key must be 1 to {MAX_KEY_CHARS} characters")
        try:
            answer = await self.ingress.idempotency.run(
                tenant=tenant,
                key=key,
                digest=request_hash(request.path, payload),
                message_count=message_count,
                produce=produce,
            )
        except IdempotencyConflict as exc:
            self.count("conflict")
            raise Refused(Refused.CONFLICT, str(exc)) from None
        except StoreUnavailable as exc:
            self.count("unavailable")
            raise Refused(Refused.UNAVAILABLE, "cannot check the Idempotency-Key right now") from exc
        if answer.replayed:
            self.count("duplicate")
        return answer

    async def accept(
        self, tenant: str, messages: list[ValidMessage], *, message_ids: list[str], resent: bool
    ) -> list[str]:
        """Make `messages` durable under `message_ids`, as `/v1/messages` does; their ids, in order."""
        try:
            accepted = await self.ingress.accept(tenant, messages, message_ids=message_ids, resent=resent)
        except RateLimited as exc:  # the tenant's limits (`ingress.tenant_guard`): nothing was queued
            self.count("rate-limited", len(messages))
            raise Refused(Refused.RATE_LIMITED, exc.detail, retry_after_s=exc.retry_after_s) from None
        except Exception as exc:
            log.error("could not make messages durable", error=repr(exc), count=len(messages))
            self.count("unavailable", len(messages))
            raise Refused(
                Refused.UNAVAILABLE, "the messages could not be made durable; nothing was accepted"
            ) from exc
        for one in accepted:
            self._counters[one.durable_in].inc()
        return [one.id for one in accepted]


def replayed_headers(answer: Answer) -> dict[str, str]:
    return {"Idempotent-Replayed": "true"} if answer.replayed else {}
