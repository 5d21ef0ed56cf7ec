"""Settings of the callbacks to customers (`[callbacks]`): where they may go, and how they are retried."""

from __future__ import annotations

from ipaddress import ip_network

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Seconds between tries: hours in all, as a customer's endpoint may be down for a night.
DEFAULT_RETRY_DELAYS_S = [10, 60, 300, 1800, 7200]


class CallbackSettings(BaseModel):
    """Callbacks POSTed to the customers' endpoints on every status change of their messages."""

    model_config = ConfigDict(extra="forbid")

    allow_networks: list[str] = Field(
        default_factory=list,
        description="CIDR ranges a callback may go to although they are loopback, link-local or private "
        '(e.g. ["127.0.0.0/8"]); everything else in those ranges is refused.',
    )
    retry_delays_s: list[int] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_DELAYS_S),
        min_length=1,
        description="Delay tiers of a callback's retries, one delay queue each; the last repeats.",
    )
    max_attempts: int = Field(
        8, ge=1, description="Tries of one callback before it is a dead letter (kind callback)."
    )
    timeout_s: float = Field(10.0, gt=0, description="Timeout of one callback request, all of it.")
    connect_timeout_s: float = Field(3.0, gt=0, description="Timeout of connecting to an endpoint.")
    concurrency: int = Field(
        256, ge=1, le=4096, description="Callbacks one callback worker holds at once, all endpoints."
    )
    per_host_concurrency: int = Field(
        4, ge=1, description="Requests at once to one endpoint host from one callback worker."
    )
    per_host_waiting: int = Field(
        8,
        ge=0,
        description="Callbacks one host may have waiting for a request slot; more are put back for later "
        "(not a try), so a slow endpoint holds no more of the worker than this.",
    )
    resolve_cache_s: float = Field(
        5.0,
        ge=0,
        description="How long a callback host's resolved addresses, and their check, are reused (0: "
        "resolved for every callback); connections are kept alive per checked address.",
    )
    secret_overlap_s: int = Field(
        86_400, ge=0, description="How long a rotated signing secret keeps signing beside the new one."
    )
    confirm_timeout_s: float = Field(
        15.0, gt=0, description="How long a callback worker waits for the confirm of a retry."
    )
    metrics_port: int = Field(
        9190, ge=0, le=65535, description="Prometheus port of a callback worker (0: none)."
    )

    @field_validator("allow_networks")
    @classmethod
    def _cidr(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                ip_network(text, strict=False)
            except ValueError as exc:
                raise ValueError(f"{text!r} is not a CIDR range: {exc}") from None
        return value
