"""CM's HTTP JSON gateway (`POST /v1.0/message`), as CM's SDKs and plain clients call it.

The product token (in the body or the X-CM-PRODUCTTOKEN header) is the tenant's relay API key. Every
recipient of every `msg` becomes one relay message. As CM does, valid messages are taken and invalid ones
listed with CM's per-message error codes: 200 when any was created, 400 when none was.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ingress.compat.common import CompatRequest, Intake, Refused, international, replayed_headers
from ingress.idempotency import Answer
from ingress.problems import is_json
from ingress.service import Ingress
from ingress.submission import Reply
from ingress.validation import ValidMessage
from shared.errors import ValidationFailed

PATH = "/v1.0/message"

# CM's codes (the ones its SDKs name): request level, then per message.
OK = 0
AUTHENTICATION_FAILED = 101
NOT_ALL_SENT = 201
REQUEST_MALFORMED = 202
MSG_ARRAY_INCORRECT = 203
MSG_INVALID_FROM = 301
MSG_INVALID_TO = 302
MSG_INVALID_MSISDN = 303
MSG_INVALID_BODY = 304
MSG_INVALID_FIELD = 305
INTERNAL_ERROR = 500

FIELDS = frozenset(
    {
        "from",
        "to",
        "body",
        "reference",
        "validity",
        "dcs",
        "allowedChannels",
        "minimumNumberOfMessageParts",
        "maximumNumberOfMessageParts",
        "customGrouping",
        "customGrouping2",
        "customGrouping3",
    }
)
BODY_TYPES = frozenset({"auto", "plain"})
# GSM-7 default alphabet and UCS-2: the relay picks between them from the text itself.
TEXT_DCS = frozenset({0, 8})
MAX_PARTS = 8  # CM's own limit of message parts
_NATIVE_CODES = {"to": MSG_INVALID_MSISDN, "from": MSG_INVALID_FROM, "body": MSG_INVALID_BODY}
_RELATIVE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?", re.IGNORECASE)
_ZONE = re.compile(r"\s*(?:GMT|UTC|Z)$", re.IGNORECASE)


class MessageRefused(Exception):
    def __init__(self, code: int, details: str, *, unsupported: bool = False) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.unsupported = unsupported  # something CM offers that the relay cannot honour


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Reply:
    return Reply(status=status, body=orjson.dumps(body), headers=headers or {})


def refusal(code: int, details: str, status: int = 400, headers: dict[str, str] | None = None) -> Reply:
    return _json(status, {"details": details, "errorCode": code, "messages": []}, headers)


class CmApi:
    def __init__(self, *, ingress: Ingress) -> None:
        self._intake = Intake(ingress=ingress, api="cm")

    async def submit(self, request: CompatRequest) -> Reply:
        if not is_json(request.header(b"content-type")):
            return refusal(REQUEST_MALFORMED, "The request body must be application/json", status=415)
        try:
            try:
                payload = orjson.loads(await self._intake.read_body(request))
            except orjson.JSONDecodeError as exc:
                return refusal(REQUEST_MALFORMED, f"The request is not valid JSON: {exc}")
            envelope = payload.get("messages") if isinstance(payload, dict) else None
            if not isinstance(envelope, dict):
                return refusal(REQUEST_MALFORMED, "A 'messages' object is required")
            tenant = await self._intake.tenant(request.header(b"x-cm-producttoken") or _token(envelope))
            if tenant is None:
                return refusal(AUTHENTICATION_FAILED, "No account found for the given authentication")
            items = envelope.get("msg")
            if not isinstance(items, list) or not items or not all(isinstance(m, dict) for m in items):
                self._intake.count("invalid")
                return refusal(MSG_ARRAY_INCORRECT, "A 'msg' array of at least one message is required")

            async def produce(message_ids: list[str], resent: bool) -> Answer:
                return await self._produce(tenant, items, message_ids, resent)

            answer = await self._intake.once(
                request, tenant=tenant, payload=payload, message_count=_slots(items), produce=produce
            )
        except Refused as refused:
            return _refused(refused)
        return _json(answer.status_code, answer.body, replayed_headers(answer))

    async def _produce(
        self, tenant: str, items: list[dict[str, Any]], message_ids: list[str], resent: bool
    ) -> Answer:
        """The answer to `items`: one result per recipient slot, and the valid ones made durable under
        the slot's id (so a repeat after an Idempotency-Key claim's lease reuses each one's id)."""
        results: list[dict[str, Any]] = []
        valid: list[tuple[int, str, ValidMessage]] = []
        for item in items:
            for number, message in self._recipients(item):
                if isinstance(message, MessageRefused):
                    results.append(_rejected(number, item.get("reference"), message))
                    self._intake.count("unsupported" if message.unsupported else "invalid")
                else:
                    valid.append((len(results), number or "", message))
                    results.append({})
        ids = []
        if valid:
            ids = await self._intake.accept(
                tenant,
                [m for _, _, m in valid],
                message_ids=[message_ids[i] for i, _, _ in valid],
                resent=resent,
            )
        for (index, number, message), message_id in zip(valid, ids, strict=True):
            results[index] = {
                "to": number,
                "status": "Accepted",
                "reference": message.reference,
                "parts": message.segments,
                "messageDetails": None,
                "messageErrorCode": OK,
                "id": message_id,
            }
        created = len(ids)
        body = {
            "details": f"Created {created} message(s)",
            "errorCode": OK if created == len(results) else NOT_ALL_SENT,
            "messages": results,
        }
        return Answer(status_code=200 if created else 400, body=body)

    def _recipients(self, item: dict[str, Any]) -> list[tuple[str | None, ValidMessage | MessageRefused]]:
        """One entry per recipient of a `msg`: the number as given and the valid message or why not."""
        numbers = item.get("to")
        if not isinstance(numbers, list) or not numbers:
            return [(None, MessageRefused(MSG_INVALID_TO, "No phone numbers found"))]
        shared: tuple[dict[str, Any], int] | MessageRefused
        try:
            shared = _common_fields(item)
        except MessageRefused as refused:
            shared = refused
        entries: list[tuple[str | None, ValidMessage | MessageRefused]] = []
        for entry in numbers:
            number = entry.get("number") if isinstance(entry, dict) else None
            if not isinstance(number, str) or not number.strip():
                entries.append((None, MessageRefused(MSG_INVALID_TO, "No phone numbers found")))
            elif isinstance(shared, MessageRefused):
                entries.append((number, shared))
            else:
                entries.append((number, self._message(number, *shared)))
        return entries

    def _message(self, number: str, fields: dict[str, Any], max_parts: int) -> ValidMessage | MessageRefused:
        try:
            message = self._intake.check({**fields, "to": international(number)})
        except ValidationFailed as exc:
            first = exc.errors[0]
            code = _NATIVE_CODES.get(first["field"], MSG_INVALID_FIELD)
            if code == MSG_INVALID_MSISDN:
                return MessageRefused(code, f"Gsm '{number}' is not a number.")
            name = "validity" if first["field"] == "validity_s" else first["field"]
            return MessageRefused(code, f"{name}: {first['message']}")
        if message.segments > max_parts:
            return MessageRefused(
                MSG_INVALID_BODY,
                f"The body takes {message.segments} parts; maximumNumberOfMessageParts is {max_parts}",
            )
        return message


def _common_fields(item: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The native fields every recipient of a `msg` shares, and its most parts; `MessageRefused` for what
    the relay cannot honour (it never drops a field silently)."""
    unknown = sorted(set(item) - FIELDS)
    if unknown:
        raise MessageRefused(
            MSG_INVALID_FIELD, f"Field(s) not supported by this relay: {', '.join(unknown)}", unsupported=True
        )
    channels = item.get("allowedChannels", ["SMS"])
    if not isinstance(channels, list) or "sms" not in {str(c).lower() for c in channels}:
        raise MessageRefused(
            MSG_INVALID_FIELD, "This relay sends SMS only: allowedChannels must hold SMS", unsupported=True
        )
    dcs = item.get("dcs", 0)
    if dcs not in TEXT_DCS or isinstance(dcs, bool):
        raise MessageRefused(
            MSG_INVALID_FIELD, "Only dcs 0 and 8 (text) are supported by this relay", unsupported=True
        )
    body = item.get("body")
    if not isinstance(body, dict) or set(body) - {"type", "content"}:
        raise MessageRefused(MSG_INVALID_BODY, "A body object with 'content' (and 'type') is required")
    if str(body.get("type", "auto")).lower() not in BODY_TYPES:
        raise MessageRefused(
            MSG_INVALID_BODY, "Only body types AUTO and PLAIN are supported by this relay", unsupported=True
        )
    content = body.get("content")
    if not isinstance(content, str) or not content:
        raise MessageRefused(MSG_INVALID_BODY, "A body without content was found")
    fields: dict[str, Any] = {"from": item.get("from"), "body": content, "reference": item.get("reference")}
    if "validity" in item:
        fields["validity_s"] = validity_s(item["validity"], now=datetime.now(UTC))
    return fields, _max_parts(item)


def _slots(items: list[dict[str, Any]]) -> int:
    """Results of a request: one per recipient, or one for a `msg` without any."""
    return sum(
        len(numbers) if isinstance(numbers := item.get("to"), list) and numbers else 1 for item in items
    )


def _token(envelope: dict[str, Any]) -> str | None:
    authentication = envelope.get("authentication")
    if not isinstance(authentication, dict):
        return None
    for name, value in authentication.items():
        if name.lower() == "producttoken" and isinstance(value, str):
            return value
    return None


def _max_parts(item: dict[str, Any]) -> int:
    """maximumNumberOfMessageParts; the minimum is checked but changes nothing for a shorter text."""
    lowest = item.get("minimumNumberOfMessageParts", 1)
    highest = item.get("maximumNumberOfMessageParts", MAX_PARTS)
    for value in (lowest, highest):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PARTS:
            raise MessageRefused(
                MSG_INVALID_FIELD, f"Message parts must be whole numbers from 1 to {MAX_PARTS}"
            )
    if lowest > highest:
        raise MessageRefused(
            MSG_INVALID_FIELD, "minimumNumberOfMessageParts exceeds maximumNumberOfMessageParts"
        )
    return int(highest)


def validity_s(value: Any, *, now: datetime) -> Any:
    """Seconds from `now` of CM's `validity`: a span ("48h", "30m", "1d2h30m") or a time ("2026-12-02
    10:00 GMT", ISO 8601 with or without an offset; without one it is UTC). Anything else is returned
    as it is, for the native validation to refuse by name."""
    if not isinstance(value, str) or not value.strip():
        return value
    text = value.strip()
    span = _RELATIVE.fullmatch(text)
    if span is not None and any(span.groups()):
        days, hours, minutes = (int(g or 0) for g in span.groups())
        return int(timedelta(days=days, hours=hours, minutes=minutes).total_seconds())
    try:
        moment = datetime.fromisoformat(_ZONE.sub("", text).replace(" ", "T", 1))
    except ValueError:
        return value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int((moment - now).total_seconds())


def _rejected(number: str | None, reference: Any, refused: MessageRefused) -> dict[str, Any]:
    return {
        "to": number,
        "status": "Rejected",
        "reference": reference if isinstance(reference, str) else None,
        "parts": 0,
        "messageDetails": refused.details,
        "messageErrorCode": refused.code,
    }


def _refused(refused: Refused) -> Reply:
    if refused.kind == Refused.UNAVAILABLE:
        return refusal(
            INTERNAL_ERROR, f"Temporarily unavailable: {refused.detail}", 503, {"Retry-After": "1"}
        )
    if refused.kind == Refused.RATE_LIMITED:
        return refusal(INTERNAL_ERROR, f"Too many requests: {refused.detail}", 429, refused.retry_after)
    if refused.kind == Refused.CONFLICT:
        return refusal(REQUEST_MALFORMED, refused.detail, status=409)
    if refused.kind == Refused.TOO_LARGE:
        return refusal(REQUEST_MALFORMED, refused.detail, status=413)
    return refusal(REQUEST_MALFORMED, refused.detail)
