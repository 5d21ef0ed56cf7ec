"""Kannel's sendsms (`GET` and `POST /cgi-bin/sendsms`), as scripts and Kannel itself (an `smsc = http` of
`system-type = kannel`) call it.

`username` is the tenant, `password` its API key. Answers are Kannel's status codes and texts, byte for
byte: a Kannel acting as a client counts anything but `202 0: Accepted for delivery` as failed. Unlike
Kannel, a request with one number the relay cannot route takes none (Kannel drops that number quietly),
and what the relay cannot honour (UDH, 8-bit data, delivery-report URLs, SMPP-only fields) is refused
by name instead of being dropped.
"""

from __future__ import annotations

import codecs
import functools
import re
from typing import Any

from ingress.compat.common import (
    CompatRequest,
    Intake,
    Refused,
    form_fields,
    international,
    replayed_headers,
)
from ingress.idempotency import Answer
from ingress.service import Ingress
from ingress.submission import Reply
from ingress.validation import ValidMessage
from shared.errors import ValidationFailed

PATH = "/cgi-bin/sendsms"
ACCEPTED = "0: Accepted for delivery"
TEXT_HTML = "text/html"  # what Kannel's smsbox labels its answers
MINUTE_S = 60

AUTH_FAILED = "Authorization failed for sendsms"
DENIED = "Number(s) has/have been denied by white- and/or black-lists."
# Kannel's range checks of its numeric fields: (lowest, highest, name in its answer); -1 means unset.
RANGES = {
    "dlr-mask": (-1, 63, "DLR-Mask"),
    "mclass": (-1, 3, "MClass"),
    "pid": (-1, 255, "PID"),
    "rpi": (-1, 2, "RPI"),
    "alt-dcs": (-1, 1, "Alt-DCS"),
    "mwi": (-1, 7, "MWI"),
    "coding": (-1, 2, "Coding"),
    "compress": (-1, 1, "Compress"),
    "validity": (-1, None, "Validity"),
    "deferred": (-1, None, "Deferred"),
    "priority": (-1, 3, "Priority"),
}
# Fields the relay has no way to pass on to a platform: refused when set, never dropped.
UNSUPPORTED = ("mclass", "mwi", "pid", "rpi", "alt-dcs", "compress", "deferred", "priority")
ALIASES = {"user": "username", "pass": "password", "dlrurl": "dlr-url", "dlrmask": "dlr-mask"}
_LEADING_INT = re.compile(r"\s*([+-]?\d+)")


class KannelAnswer(Exception):
    def __init__(self, status: int, text: str, *, unsupported: bool = False) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.unsupported = unsupported


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> Reply:
    # No newline: a Kannel client compares the whole body with "0: Accepted for delivery".
    return Reply(status=status, body=text.encode(), media_type=TEXT_HTML, headers=headers or {})


def _not_supported(what: str) -> KannelAnswer:
    return KannelAnswer(400, f"{what} not supported by this relay, rejected", unsupported=True)


class KannelApi:
    def __init__(self, *, ingress: Ingress) -> None:
        self._intake = Intake(ingress=ingress, api="kannel")

    async def sendsms(self, request: CompatRequest) -> Reply:
        try:
            params = await self._params(request)
            tenant = await self._intake.tenant(params.get("password"))
            if tenant is None or tenant != params.get("username"):
                if tenant is not None:
                    self._intake.count("unauthorized")
                return _text(403, AUTH_FAILED)
            try:
                messages = self._messages(params, headers_post=_headers_post(request))
            except KannelAnswer as refusal:
                self._intake.count("unsupported" if refusal.unsupported else "invalid")
                raise

            async def produce(message_ids: list[str], resent: bool) -> Answer:
                ids = await self._intake.accept(tenant, messages, message_ids=message_ids, resent=resent)
                return Answer(status_code=202, body={"ids": ids})

            answer = await self._intake.once(
                request, tenant=tenant, payload=params, message_count=len(messages), produce=produce
            )
        except KannelAnswer as refused:
            return _text(refused.status, refused.text)
        except Refused as refused:
            return _refused(refused)
        headers = {"X-Relay-Message-Ids": ",".join(answer.body["ids"]), **replayed_headers(answer)}
        return _text(202, ACCEPTED, headers)

    async def _params(self, request: CompatRequest) -> dict[str, str]:
        """The request's fields, first occurrence winning as in Kannel; values are the raw bytes as
        latin-1 text, decoded with `charset` only once it is known."""
        if request.method == "GET":
            return _fields(form_fields(request.query.decode("latin-1"), encoding="latin-1").items())
        body = await self._intake.read_body(request)
        media_type, _, options = (request.header(b"content-type") or "").partition(";")
        media_type = media_type.strip().lower()
        if media_type == "application/x-www-form-urlencoded":
            return _fields(form_fields(body.decode("latin-1"), encoding="latin-1").items())
        if _headers_post(request):
            fields = _fields(
                (name[len(b"x-kannel-") :].decode("latin-1"), value.decode("latin-1"))
                for name, value in request.headers.items()
                if name.startswith(b"x-kannel-")
            )
            fields["text"] = body.decode("latin-1")
            charset = re.search(r"charset=\"?([\w.:-]+)", options, re.IGNORECASE)
            if charset is not None:
                fields.setdefault("charset", charset.group(1))
            if media_type == "application/octet-stream":
                fields.setdefault("coding", "1")  # as Kannel: an octet stream is 8-bit data
            return fields
        if media_type in ("text/html", "text/vnd.wap.wml", "text/xml"):
            raise _not_supported(f"POST of {media_type}")
        raise KannelAnswer(400, "Invalid content-type")

    def _messages(self, params: dict[str, str], *, headers_post: bool) -> list[ValidMessage]:
        """One valid message per distinct number of `to`, or the `KannelAnswer` Kannel would give."""
        to = params.get("to")
        if to is None:
            raise KannelAnswer(
                400,
                "Missing receiver(s) number(s), rejected"
                if headers_post
                else "Missing receiver number, rejected",
            )
        if not to:
            raise KannelAnswer(400, "Empty receiver number not allowed, rejected")
        if params.get("udh"):
            raise _not_supported("UDH")
        numbers = _numbers(params)
        if not params.get("from"):
            raise KannelAnswer(400, "Sender missing and no global set, rejected")
        fields: dict[str, Any] = {"from": params["from"], "body": _decoded_text(params, numbers)}
        validity_min = numbers.get("validity", -1)
        if validity_min != -1:
            fields["validity_s"] = validity_min * MINUTE_S
        recipients = list(dict.fromkeys(international(n) for n in to.split()))
        return [self._message({**fields, "to": number}) for number in recipients]

    def _message(self, fields: dict[str, Any]) -> ValidMessage:
        try:
            return self._intake.check(fields)
        except ValidationFailed as exc:
            field = exc.errors[0]["field"]
            if field == "to":
                raise KannelAnswer(400, DENIED) from None
            if field == "from":
                raise KannelAnswer(400, "Sender field misformed, rejected") from None
            if field == "validity_s":
                raise KannelAnswer(400, "Validity field misformed, rejected") from None
            if not fields["body"]:
                raise KannelAnswer(400, "Empty text not allowed, rejected.") from None
            raise KannelAnswer(400, f"Text not acceptable ({exc.errors[0]['message']}), rejected") from None


_HEADERS_POST_TYPES = ("text/plain", "application/octet-stream")


def _headers_post(request: CompatRequest) -> bool:
    """Kannel's own POST: the text is the body, every other field an X-Kannel-* header."""
    media_type = (request.header(b"content-type") or "").partition(";")[0].strip().lower()
    return request.method == "POST" and media_type in _HEADERS_POST_TYPES


def _fields(pairs: Any) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(ALIASES.get(name.lower(), name.lower()), value)
    return fields


def _numbers(params: dict[str, str]) -> dict[str, int]:
    """Kannel's numeric fields that are set, range-checked with Kannel's answers; the ones the relay
    cannot honour refused. Like Kannel (sscanf), a value without a leading number counts as unset."""
    numbers: dict[str, int] = {}
    for name, (lowest, highest, label) in RANGES.items():
        given = params.get(name)
        match = _LEADING_INT.match(given) if given else None
        if match is None:
            continue
        value = int(match.group(1))
        if value < lowest or (highest is not None and value > highest):
            raise KannelAnswer(400, f"{label} field misformed, rejected")
        numbers[name] = value
    for name in UNSUPPORTED:
        if numbers.get(name, -1) != -1:
            raise _not_supported(f"{RANGES[name][2]} field")
    if numbers.get("coding") == 1:
        raise _not_supported("8-bit data (coding=1)")
    if params.get("meta-data"):
        raise _not_supported("Meta-data field")
    dlr_url = params.get("dlr-url", "")
    if dlr_url:  # an empty one is what a Kannel client sends when it wants no report
        if not dlr_url.lower().startswith(("http://", "https://")):
            raise KannelAnswer(400, "DLR-URL field misformed, rejected")
        raise _not_supported("DLR-URL (delivery reports)")
    return numbers


def _decoded_text(params: dict[str, str], numbers: dict[str, int]) -> str:
    """The text in its charset: by default WINDOWS-1252, or UTF-16BE with coding=2, as in Kannel."""
    raw = params.get("text", "").encode("latin-1")
    charset = params.get("charset") or ("UTF-16BE" if numbers.get("coding") == 2 else "WINDOWS-1252")
    try:
        return raw.decode(_codec(charset))
    except (LookupError, UnicodeDecodeError):
        raise KannelAnswer(400, "Charset or body misformed, rejected") from None


@functools.lru_cache(maxsize=64)
def _codec(charset: str) -> str:
    return codecs.lookup(charset).name


def _refused(refused: Refused) -> Reply:
    if refused.kind == Refused.UNAVAILABLE:
        return _text(503, "Temporal failure, try again later.", {"Retry-After": "1"})
    if refused.kind == Refused.RATE_LIMITED:
        return _text(429, f"Too many requests: {refused.detail}, try again later.", refused.retry_after)
    if refused.kind == Refused.CONFLICT:
        return _text(409, f"Idempotency-Key conflict: {refused.detail}, rejected")
    if refused.kind == Refused.TOO_LARGE:
        return _text(413, "Request too large, rejected")
    return _text(400, f"{refused.detail}, rejected")
