"""The platform side of the simulator: the http-json (CM-style) submit contract, with faults."""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
import zlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from simulator.callbacks import CallbackReports
from simulator.http11 import Request, Response, json_response
from simulator.state import Counters, Fault, FaultMode

SUBMIT_PATH = "/v1.0/message"
MAX_MESSAGES_PER_REQUEST = 100

# Error codes in the style of CM's gateway.
ERR_AUTHENTICATION = 101
ERR_MALFORMED = 201
ERR_UNAVAILABLE = 900
ERR_INTERNAL = 999
MSG_ERR_INVALID_NUMBER = 303
MSG_ERR_EXPIRED = 305
MSG_ERR_REJECTED = 309

_NUMBER = re.compile(r"^\+?[1-9]\d{5,14}$")


class Malformed(Exception):
    """The request body is not a submit of this contract."""


@dataclass(frozen=True, slots=True)
class Submitted:
    sender: str
    number: str
    content: str
    reference: str
    validity_epoch_s: float | None
    callback: str | None = None  # where this message's delivery reports go


def parse_submit(body: bytes) -> tuple[str, list[Submitted]]:
    """The product token and the messages of a submit body, or `Malformed` with the first problem."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Malformed("body is not JSON") from None
    envelope = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(envelope, dict):
        raise Malformed('missing object "messages"')
    auth = envelope.get("authentication")
    token = auth.get("producttoken") if isinstance(auth, dict) else None
    if not isinstance(token, str):
        raise Malformed('missing "messages.authentication.producttoken"')
    items = envelope.get("msg")
    if not isinstance(items, list) or not items:
        raise Malformed('"messages.msg" must be a non-empty list')
    if len(items) > MAX_MESSAGES_PER_REQUEST:
        raise Malformed(f'"messages.msg" takes at most {MAX_MESSAGES_PER_REQUEST} messages')
    return token, [_parse_message(item, index) for index, item in enumerate(items)]


def _parse_message(item: Any, index: int) -> Submitted:
    where = f"msg[{index}]"
    if not isinstance(item, dict):
        raise Malformed(f"{where} must be an object")
    sender = item.get("from")
    if not isinstance(sender, str) or not sender:
        raise Malformed(f"{where}.from must be a non-empty string")
    recipients = item.get("to")
    if (
        not isinstance(recipients, list)
        or len(recipients) != 1
        or not isinstance(recipients[0], dict)
        or not isinstance(recipients[0].get("number"), str)
    ):
        raise Malformed(f'{where}.to must be a list of one {{"number": ...}}')
    body = item.get("body")
    content = body.get("content") if isinstance(body, dict) else None
    if not isinstance(content, str):
        raise Malformed(f"{where}.body.content must be a string")
    reference = item.get("reference")
    if not isinstance(reference, str) or not reference:
        raise Malformed(f"{where}.reference must be a non-empty string")
    callback = item.get("callback")
    if callback is not None and (
        not isinstance(callback, str) or not callback.startswith(("http://", "https://"))
    ):
        raise Malformed(f"{where}.callback must be an http(s) URL")
    validity = item.get("validity")
    validity_epoch_s: float | None = None
    if validity is not None:
        try:
            validity_epoch_s = datetime.fromisoformat(str(validity)).timestamp()
        except ValueError:
            raise Malformed(f"{where}.validity must be an ISO-8601 time") from None
    return Submitted(
        sender=sender,
        number=recipients[0]["number"],
        content=content,
        reference=reference,
        validity_epoch_s=validity_epoch_s,
        callback=callback,
    )


def segments(content: str) -> int:
    """SMS parts the text takes (GSM-7 approximated by ASCII)."""
    single, multi = (160, 153) if content.isascii() else (70, 67)
    return 1 if len(content) <= single else math.ceil(len(content) / multi)


def _rejected_for_good(reference: str, share: float) -> bool:
    # Derived from the reference, not drawn at random, so a retried message gets the same final answer.
    return share > 0 and zlib.crc32(reference.encode()) / 2**32 < share


class PlatformApi:
    """Handles requests on the platform port under the current fault; counts every message it takes."""

    def __init__(
        self,
        *,
        counters: Counters,
        token: str | None,
        rng: random.Random | None = None,
        reports: CallbackReports | None = None,
    ) -> None:
        self.reports = reports or CallbackReports()
        self.counters = counters
        self.fault = Fault()
        self._token = token
        self._rng = rng or random.Random()

    async def handle(self, request: Request) -> Response | None:
        fault = self.fault
        if fault.mode is FaultMode.BLACKHOLE:
            return None
        if request.path.rstrip("/") != SUBMIT_PATH:
            return json_response(404, {"errorCode": 404, "details": f"no such endpoint {request.path}"})
        if request.method != "POST":
            return json_response(405, {"errorCode": 405, "details": "use POST"})
        if fault.mode is FaultMode.ERROR:
            return json_response(
                500,
                {
                    "errorCode": ERR_INTERNAL,
                    "details": "internal error: nothing was processed",
                    "messages": [],
                },
            )
        if fault.mode is FaultMode.FLAKY and self._rng.random() < fault.share:
            return json_response(
                503, {"errorCode": ERR_UNAVAILABLE, "details": "temporarily unavailable", "messages": []}
            )
        try:
            token, submitted = parse_submit(request.body)
        except Malformed as exc:
            return json_response(400, {"errorCode": ERR_MALFORMED, "details": str(exc), "messages": []})
        if self._token is not None and token != self._token:
            return json_response(401, {"errorCode": ERR_AUTHENTICATION, "details": "invalid product token"})
        answers = [self._take(message, fault) for message in submitted]
        if fault.mode is FaultMode.SLOW and fault.latency_ms > 0:
            await asyncio.sleep(fault.latency_ms / 1000)
        return json_response(
            200, {"errorCode": 0, "details": f"Created {len(answers)} message(s)", "messages": answers}
        )

    def _take(self, message: Submitted, fault: Fault) -> dict[str, Any]:
        error_code, details = 0, None
        if not _NUMBER.match(message.number):
            error_code, details = MSG_ERR_INVALID_NUMBER, "invalid recipient number"
        elif message.validity_epoch_s is not None and message.validity_epoch_s <= time.time():
            error_code, details = MSG_ERR_EXPIRED, "validity period has passed"
        elif fault.mode is FaultMode.REJECT and _rejected_for_good(message.reference, fault.share):
            error_code, details = MSG_ERR_REJECTED, "rejected by the platform (simulated)"
        self.counters.record(message.reference, accepted=error_code == 0)
        if error_code == 0 and message.callback is not None:
            self.reports.schedule(message.callback, reference=message.reference)
        return {
            "to": message.number,
            "reference": message.reference,
            "status": "Accepted" if error_code == 0 else "Rejected",
            "messageErrorCode": error_code,
            "messageDetails": details,
            "parts": segments(message.content),
        }
