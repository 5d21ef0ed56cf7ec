"""Twilio's Messages API (`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` and `GET
.../Messages/{Sid}.json`), as the twilio SDKs call it once their API base URL names the relay.

HTTP Basic auth: the user is the tenant's account SID (`relay keys create` prints it), the password one of
its API keys. A message's SID is "SM" and its relay id, so the native status API finds it too. Errors are
Twilio's JSON error objects with its codes where one applies.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ingress.compat.common import CompatRequest, Intake, Refused, form_fields, replayed_headers
from ingress.idempotency import Answer
from ingress.service import Ingress
from ingress.submission import Reply
from ingress.validation import ValidMessage
from shared.errors import ValidationFailed
from shared.store.accounts import account_sid_of
from shared.store.messages import MessageView, get_message
from shared.store.models import Message

API_VERSION = "2010-04-01"
PREFIX = f"/{API_VERSION}/Accounts/"
ROUTE = re.compile(rf"/{API_VERSION}/Accounts/(?P<account>[^/]+)/Messages(?:/(?P<sid>[^/]+))?\.json")
MESSAGE_SID = re.compile(r"SM(?P<id>[0-9a-f]{32})")
MAX_VALIDITY_S = 36_000  # Twilio's own limit of ValidityPeriod
MORE_INFO = "https://www.twilio.com/docs/errors/"
KNOWN_SIDS_MAX = 10_000

# Twilio's codes for the cases that apply.
UNSUPPORTED = 20001  # "unknown parameter": here a parameter the relay cannot honour
AUTHENTICATE = 20003
METHOD_NOT_ALLOWED = 20004
NOT_FOUND = 20404
CONFLICT = 20409
UNAVAILABLE = 20503
TOO_MANY_REQUESTS = 20429
INVALID_TO = 21211
INVALID_FROM = 21212
BODY_REQUIRED = 21602
FROM_REQUIRED = 21603
TO_REQUIRED = 21604
BODY_TOO_LONG = 21617
INVALID_VALIDITY = 21624
VALIDITY_EXPIRED = 30036
UNKNOWN_ERROR = 30008

FIELDS = frozenset({"To", "From", "Body", "ValidityPeriod", "StatusCallback"})
REQUIRED = (
    ("To", TO_REQUIRED, "A 'To' phone number is required."),
    ("From", FROM_REQUIRED, "A 'From' phone number is required."),
    ("Body", BODY_REQUIRED, "Message body is required."),
)
# Parameters accepted only with the value that asks nothing of the relay (what Twilio assumes unset).
DEFAULTS = {
    "SmartEncoded": "false",
    "SendAsMms": "false",
    "ShortenUrls": "false",
    "ProvideFeedback": "false",
    "ForceDelivery": "false",
    "ContentRetention": "retain",
    "AddressRetention": "retain",
}
# The relay's statuses as Twilio's: "sent" is a platform having taken it, "delivered" and "undelivered"
# what a platform's delivery report said.
STATUSES = {
    "accepted": "queued",
    "retrying": "queued",
    "sent": "sent",
    "delivered": "delivered",
    "undelivered": "undelivered",
    "rejected": "failed",
    "expired": "failed",
    "dead": "failed",
}


def error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    body = {"code": code, "message": message, "more_info": f"{MORE_INFO}{code}", "status": status}
    return Reply(status=status, body=orjson.dumps(body), headers=headers or {})


class TwilioError(Exception):
    def __init__(self, status: int, code: int, message: str, *, unsupported: bool = False) -> None:
        super().__init__(message)
        self.reply = error(status, code, message)
        self.unsupported = unsupported


def _unauthorized() -> Reply:
    return error(401, AUTHENTICATE, "Authenticate", {"WWW-Authenticate": 'Basic realm="Twilio API"'})


class AccountSids:
    """Tenants' account SIDs, remembered once read: a SID never changes."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._known: dict[str, str] = {}

    async def of(self, tenant: str) -> str | None:
        sid = self._known.get(tenant)
        if sid is not None:
            return sid
        try:
            async with self._sessions() as session:
                sid = await account_sid_of(session, tenant)
        except Exception as exc:
            raise Refused(Refused.UNAVAILABLE, "cannot check the account SID right now") from exc
        if sid is not None:
            if len(self._known) >= KNOWN_SIDS_MAX:
                self._known.clear()
            self._known[tenant] = sid
        return sid


class TwilioApi:
    def __init__(self, *, ingress: Ingress) -> None:
        self._intake = Intake(ingress=ingress, api="twilio")
        self._sessions = ingress.sessions
        self._sids = AccountSids(sessions=ingress.sessions)

    async def handle(self, request: CompatRequest) -> Reply:
        route = ROUTE.fullmatch(request.path)
        if route is None:
            return error(404, NOT_FOUND, f"The requested resource {request.path} was not found")
        try:
            tenant = await self._authenticated(request, route["account"])
            if tenant is None:
                return _unauthorized()
            if route["sid"] is None and request.method == "POST":
                return await self._create(request, tenant, route["account"])
            if route["sid"] is not None and request.method == "GET":
                return await self._fetch(request.path, tenant, route["account"], route["sid"])
            return error(405, METHOD_NOT_ALLOWED, f"{request.method} is not supported on {request.path}")
        except TwilioError as refused:
            return refused.reply
        except Refused as refused:
            return _refused(refused)

    async def _authenticated(self, request: CompatRequest, account: str) -> str | None:
        """The tenant whose key is the password, when the user and the URL name its account SID."""
        credentials = _basic(request.header(b"authorization"))
        if credentials is None:
            self._intake.count("unauthorized")
            return None
        user, key = credentials
        tenant = await self._intake.tenant(key)
        if tenant is None:
            return None
        sid = await self._sids.of(tenant)
        if sid is None or user != sid or account != sid:
            self._intake.count("unauthorized")
            return None
        return tenant

    async def _create(self, request: CompatRequest, tenant: str, account: str) -> Reply:
        form = _form(await self._intake.read_body(request))
        try:
            message = self._message(form)
        except TwilioError as refused:
            self._intake.count("unsupported" if refused.unsupported else "invalid")
            raise

        async def produce(message_ids: list[str], resent: bool) -> Answer:
            (message_id,) = await self._intake.accept(
                tenant, [message], message_ids=message_ids, resent=resent
            )
            resource = _created(account, message_id, message, now=datetime.now(UTC))
            return Answer(status_code=201, body=resource)

        answer = await self._intake.once(
            request, tenant=tenant, payload=form, message_count=1, produce=produce
        )
        return Reply(
            status=answer.status_code, body=orjson.dumps(answer.body), headers=replayed_headers(answer)
        )

    def _message(self, form: dict[str, str]) -> ValidMessage:
        for name, value in form.items():
            if name in FIELDS or DEFAULTS.get(name) == value.lower():
                continue
            raise TwilioError(
                400, UNSUPPORTED, f"Parameter {name} is not supported by this relay", unsupported=True
            )
        if form.get("StatusCallback"):
            raise TwilioError(
                400, UNSUPPORTED, "StatusCallback is not supported by this relay yet", unsupported=True
            )
        for name, code, message in REQUIRED:
            if not form.get(name):
                raise TwilioError(400, code, message)
        fields: dict[str, Any] = {"to": form["To"], "from": form["From"], "body": form["Body"]}
        if "ValidityPeriod" in form:
            validity = form["ValidityPeriod"]
            if not validity.isdigit() or not 1 <= int(validity) <= MAX_VALIDITY_S:
                raise TwilioError(400, INVALID_VALIDITY, "Invalid validity period value")
            fields["validity_s"] = int(validity)
        try:
            return self._intake.check(fields)
        except ValidationFailed as exc:
            raise _invalid(form, exc.errors[0]) from None

    async def _fetch(self, path: str, tenant: str, account: str, sid: str) -> Reply:
        found = MESSAGE_SID.fullmatch(sid)
        view, body = None, ""
        if found is not None:
            try:
                async with self._sessions() as session:
                    view = await get_message(session, message_id=found["id"], tenant=tenant)
                    row = await session.get(Message, found["id"]) if view is not None else None
                    body = row.body if row is not None else ""
            except Exception as exc:
                raise Refused(Refused.UNAVAILABLE, "the store cannot be read right now") from exc
        if view is None:
            return error(404, NOT_FOUND, f"The requested resource {path} was not found")
        return Reply(status=200, body=orjson.dumps(_fetched(account, view, body)))


def _basic(authorization: str | None) -> tuple[str, str] | None:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, colon, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if colon else None


def _form(body: bytes) -> dict[str, str]:
    try:
        return form_fields(body.decode(), encoding="utf-8")
    except UnicodeDecodeError:
        raise TwilioError(400, UNSUPPORTED, "The request body is not UTF-8 form data") from None


def _invalid(form: dict[str, str], first: dict[str, str]) -> TwilioError:
    field = first["field"]
    if field == "to":
        return TwilioError(400, INVALID_TO, f"The 'To' number {form['To']} is not a valid phone number.")
    if field == "from":
        return TwilioError(
            400,
            INVALID_FROM,
            f"The 'From' number {form['From']} is not a valid phone number, shortcode, "
            "or alphanumeric sender ID.",
        )
    if field == "validity_s":
        return TwilioError(400, INVALID_VALIDITY, f"Invalid validity period value: {first['message']}")
    return TwilioError(400, BODY_TOO_LONG, f"The message body is too long: it {first['message']}")


def _rfc2822(moment: datetime) -> str:
    return _rfc2822_second(int(moment.timestamp()))


@functools.lru_cache(maxsize=64)
def _rfc2822_second(epoch_s: int) -> str:
    # Cached: the submits of one second share their date, and formatting it was a visible share of one.
    return format_datetime(datetime.fromtimestamp(epoch_s, UTC))


def _resource(account: str, message_id: str, **fields: Any) -> dict[str, Any]:
    sid = f"SM{message_id}"
    return {
        "account_sid": account,
        "api_version": API_VERSION,
        "direction": "outbound-api",
        "messaging_service_sid": None,
        "num_media": "0",
        "price": None,
        "price_unit": None,
        "sid": sid,
        "subresource_uris": {},
        "uri": f"{PREFIX}{account}/Messages/{sid}.json",
        **fields,
    }


def _created(account: str, message_id: str, message: ValidMessage, *, now: datetime) -> dict[str, Any]:
    created = _rfc2822(now)
    return _resource(
        account,
        message_id,
        body=message.body,
        date_created=created,
        date_sent=None,
        date_updated=created,
        error_code=None,
        error_message=None,
        num_segments=str(message.segments),
        status="queued",
        to=message.to,
        **{"from": message.sender},
    )


def _fetched(account: str, view: MessageView, body: str) -> dict[str, Any]:
    status = STATUSES.get(view.status, "queued")
    taken = [a.at for a in view.history if a.outcome == "accepted"]
    last_detail = view.history[-1].detail if view.history else None
    error_code = None
    if status in ("failed", "undelivered"):
        error_code = VALIDITY_EXPIRED if view.status == "expired" else UNKNOWN_ERROR
    return _resource(
        account,
        view.id,
        body=body,
        date_created=_rfc2822(view.accepted_at),
        date_sent=_rfc2822(taken[-1]) if taken else None,
        date_updated=_rfc2822(view.updated_at),
        error_code=error_code,
        error_message=last_detail if error_code is not None else None,
        num_segments=str(view.segments),
        status=status,
        to=view.to_number,
        **{"from": view.sender},
    )


def _refused(refused: Refused) -> Reply:
    if refused.kind == Refused.UNAVAILABLE:
        return error(503, UNAVAILABLE, f"Service unavailable: {refused.detail}", {"Retry-After": "1"})
    if refused.kind == Refused.RATE_LIMITED:
        return error(429, TOO_MANY_REQUESTS, f"Too Many Requests: {refused.detail}", refused.retry_after)
    if refused.kind == Refused.CONFLICT:
        return error(409, CONFLICT, refused.detail)
    if refused.kind == Refused.TOO_LARGE:
        return error(413, UNSUPPORTED, refused.detail)
    return error(400, UNSUPPORTED, refused.detail)
