"""The signature of a callback: ``X-Relay-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]``.

Each ``v1`` is the hex HMAC-SHA256 of ``"<t>.<raw body>"`` keyed with the UTF-8 bytes of one of the
tenant's signing secrets: the current one, and for a while after a rotation the previous one too, so a
customer who has not yet switched keeps verifying.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

HEADER = "X-Relay-Signature"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret: 256 random bits, printable."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp_s: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<t>.<body>"`` keyed with the secret's UTF-8 bytes."""
    signed = str(timestamp_s).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secrets_in_force: Sequence[str], timestamp_s: int, body: bytes) -> str:
    """The header's value: the time, then one ``v1`` per secret (current first)."""
    if not secrets_in_force:
        raise ValueError("a callback is signed with at least one secret")
    parts = [f"t={timestamp_s}"]
    parts += [f"v1={signature(secret, timestamp_s, body)}" for secret in secrets_in_force]
    return ",".join(parts)


def verify(header: str, body: bytes, secret: str, *, now_s: int, tolerance_s: int = 300) -> bool:
    """Whether `header` signs `body` with `secret` within `tolerance_s` of `now_s` (the check a
    customer makes; the README shows it standalone)."""
    fields = [part.partition("=") for part in header.split(",")]
    stamps = [value for key, _, value in fields if key == "t"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now_s - int(stamps[0])) > tolerance_s:
        return False
    expected = signature(secret, int(stamps[0]), body)
    return any(key == "v1" and hmac.compare_digest(value, expected) for key, _, value in fields)
