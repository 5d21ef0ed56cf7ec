"""What a tenant is told of each attempt: its outcome and a fixed text per kind of failure.

A platform's own answer can name internal hosts and ports, or say that the relay's credentials were
refused; tenants get none of it. The whole answer stays in the store for operators (`relay dead show`,
the workers' logs).
"""

from __future__ import annotations

import re

from shared.model import Outcome

ACCEPTED = "accepted by the platform"
REJECTED = "refused by the platform"
EXPIRED = "its validity ran out before a platform took it"
AUTHENTICATION = "the platform did not accept the relay's credentials; it is tried again or elsewhere"
TIMEOUT = "the platform did not answer in time; it is tried again or elsewhere"
REFUSED = "the platform could not be reached; it is tried again or elsewhere"
SERVER_ERROR = "the platform answered with an error; it is tried again or elsewhere"
UNAVAILABLE = "the platform could not take it; it is tried again or elsewhere"
AMBIGUOUS = "sent, but the platform's answer was lost: it may arrive twice"

# Checked in this order: a timeout while connecting is a timeout, an HTTP 401 is authentication.
_KINDS = (
    (re.compile(r"auth|credential|password|\b40[13]\b|rinvpaswd|rinvsysid", re.I), AUTHENTICATION),
    (re.compile(r"time[ds]? ?out|timeout|no response|no answer", re.I), TIMEOUT),
    (re.compile(r"refused|unreachable|not sent|connect|reset|\bdown\b|no route", re.I), REFUSED),
    (re.compile(r"\b5\d\d\b|server error|syserr|failed", re.I), SERVER_ERROR),
)


def public_detail(outcome: str, detail: str) -> str:
    """The text a tenant sees for one attempt of `outcome` whose platform answered `detail`."""
    if outcome == Outcome.ACCEPTED:
        return ACCEPTED
    if outcome == Outcome.REJECTED:
        return REJECTED
    if outcome == Outcome.EXPIRED:
        return EXPIRED
    if outcome == Outcome.AMBIGUOUS:
        return AMBIGUOUS
    for pattern, text in _KINDS:
        if pattern.search(detail):
            return text
    return UNAVAILABLE
