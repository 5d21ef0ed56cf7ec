"""Shapes of the HTTP API, for the OpenAPI document. The hot path does not run pydantic over
requests: bodies are parsed with orjson and checked by `ingress.validation`, which names every bad
field in the problem answer."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class SubmitRequest(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    to: str = Field(..., description="Recipient, E.164 or national (ingress.default_region).")
    sender: str = Field(
        ..., alias="from", description="Sender: 1-11 letters/digits, or 1-16 digits.", examples=["MyBank"]
    )
    body: str = Field(..., description="Text; GSM-7 or UCS-2, at most ingress.max_segments segments.")
    reference: str | None = Field(None, max_length=128, description="The client's own reference.")
    validity_s: int | None = Field(None, ge=1, description="Seconds the message may wait to be delivered.")
    callback_url: str | None = Field(
        None,
        max_length=2048,
        description="http(s) URL the relay POSTs each status change of this message to, signed "
        "(default: the tenant's). Hosts resolving to loopback, link-local or private addresses are "
        "refused (422) unless callbacks.allow_networks allows them.",
        examples=["https://example.com/sms-status"],
    )


class BatchRequest(BaseModel):
    messages: list[SubmitRequest] = Field(..., description="Up to ingress.max_batch messages.")


class SubmitAccepted(BaseModel):
    id: str
    status: str = Field("accepted")


class FieldError(BaseModel):
    field: str
    message: str


class BatchItemResult(BaseModel):
    index: int
    status: str = Field(..., description='"accepted" or "rejected".')
    id: str | None = None
    errors: list[FieldError] | None = None


class BatchAccepted(BaseModel):
    accepted: int
    rejected: int
    results: list[BatchItemResult]


class AttemptOut(BaseModel):
    site: str
    attempt: int
    outcome: str
    detail: str = Field(
        ...,
        description="A fixed text per outcome and kind of failure; operators see the "
        "platform's own answer in relay dead show and the logs.",
    )
    at: datetime
    latency_ms: float | None
    possible_duplicate: bool = Field(..., description="Ambiguous attempt: the platform may have it twice.")


class ReportOut(BaseModel):
    site: str = Field(..., description="The site whose platform sent the report.")
    attempt: int = Field(..., description="The attempt it reports on (0: the platform did not say).")
    status: str = Field(..., description="delivered, undelivered, sent (the SMSC took it) or pending.")
    platform_status: str = Field(..., description='The platform\'s own word: "DELIVRD", "8", "ESME_ROK".')
    error_code: str = Field(..., description="The network's error code, when there is one.")
    at: datetime | None = Field(..., description="When the platform says it happened.")
    received_at: datetime


class MessageStatus(BaseModel):
    id: str
    status: str = Field(
        ...,
        description="accepted, retrying; then sent (a platform took it), which a delivery report may "
        "move to delivered or undelivered; or rejected, expired, dead.",
    )
    site: str
    to: str
    sender: str = Field(..., alias="from")
    reference: str | None
    segments: int
    encoding: str
    attempts: int
    possible_duplicates: int
    accepted_at: datetime
    updated_at: datetime
    expires_at: datetime
    history: list[AttemptOut]
    reports: list[ReportOut] = Field(..., description="Delivery reports of the platforms, oldest first.")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


class Readiness(BaseModel):
    ready: bool
    broker: str
    store: str
    spool_backlog: int
