"""Settings of the guard (`[guard]`): tenants' limits and the bounds on slow and hostile clients; and
the kinds of number a submit can refuse (`ingress.blocked_number_types`)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class NumberType(StrEnum):
    """Kinds of recipient number (phonenumbers' types) a submit can be set to refuse."""

    PREMIUM_RATE = "premium-rate"
    SHARED_COST = "shared-cost"
    TOLL_FREE = "toll-free"
    UAN = "uan"
    VOICEMAIL = "voicemail"
    PAGER = "pager"
    VOIP = "voip"
    PERSONAL_NUMBER = "personal-number"
    FIXED_LINE = "fixed-line"


class GuardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    """Limits that keep one tenant or one client from taking the ingress from the others."""

    default_per_second: float = Field(
        0.0, ge=0, description="Messages per second of a tenant without a limit of its own (0: no limit)."
    )
    default_burst: int = Field(
        0, ge=0, description="Burst of a tenant without a limit of its own (0: one second's worth)."
    )
    default_max_open: int = Field(
        256, ge=0, description="Submits one tenant may have open at once in one ingress process (0: no cap)."
    )
    default_max_queued: int = Field(
        0, ge=0, description="Messages one tenant may have accepted and not yet settled (0: no cap)."
    )
    bulk_after: int = Field(
        1000,
        ge=0,
        description="A tenant with more messages than this unsettled sends to the sites' bulk queues, "
        "which workers take after the other tenants' jobs (0: never).",
    )
    limits_refresh_s: float = Field(
        2.0, gt=0, le=5, description="How often the ingress reads tenants' limits from the store."
    )
    redis_url: str | None = Field(
        None,
        description="Redis that ingress replicas share their rate limits through (none: each process "
        "limits on its own, right for one replica).",
    )
    redis_timeout_s: float = Field(
        0.25, gt=0, description="Timeout of one Redis call; past it the limit fails open."
    )
    header_timeout_s: float = Field(10.0, gt=0, description="Time a client has to send a request's headers.")
    body_timeout_s: float = Field(30.0, gt=0, description="Time a client has to send a request's body.")
    idle_timeout_s: float = Field(
        60.0, gt=0, description="An idle keep-alive connection is closed after this long."
    )
    drain_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Most of an unread request body read and dropped so a client that sends it whole "
        "before reading still gets the answer (413, 401, ...).",
    )
    admin_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Port on ingress.host that serves /metrics, /docs and /openapi.json to whoever "
        "reaches it (0: none); off loopback the API port serves them only with admin_token.",
    )
    admin_token: str | None = Field(
        None,
        description="Bearer token that opens /metrics, /docs and /openapi.json on the API port when "
        "it listens on other addresses than loopback.",
    )
