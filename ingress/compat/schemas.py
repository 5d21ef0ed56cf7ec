"""Shapes of the drop-in APIs, for the OpenAPI document only: requests are parsed by hand, as the
gateways they imitate parse them, and answered in those gateways' own formats."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ingress.idempotency import MAX_KEY_CHARS


class CmNumber(BaseModel):
    number: str = Field(..., description="00 and the country code, +, or national (ingress.default_region).")


class CmBody(BaseModel):
    type: str = Field("AUTO", description="AUTO or PLAIN: the relay picks GSM-7 or UCS-2 from the text.")
    content: str


class CmMsg(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    sender: str = Field(..., alias="from")
    to: list[CmNumber] = Field(..., description="Each recipient becomes one relay message.")
    body: CmBody
    reference: str | None = None
    validity: str | None = Field(
        None, description='A span ("48h", "30m") or a time ("2026-12-02 10:00 GMT").'
    )
    dcs: int | None = Field(None, description="0 or 8 (text); others are refused.")
    allowedChannels: list[str] | None = Field(None, description="Must hold SMS: the relay sends SMS only.")
    minimumNumberOfMessageParts: int | None = None
    maximumNumberOfMessageParts: int | None = Field(None, description="A longer text is refused (304).")
    customGrouping: str | None = Field(None, description="Accepted; not kept.")
    customGrouping2: str | None = Field(None, description="Accepted; not kept.")
    customGrouping3: str | None = Field(None, description="Accepted; not kept.")


class CmAuthentication(BaseModel):
    producttoken: str = Field(
        ..., description="The tenant's relay API key (or the X-CM-PRODUCTTOKEN header)."
    )


class CmMessages(BaseModel):
    authentication: CmAuthentication
    msg: list[CmMsg]


class CmRequest(BaseModel):
    messages: CmMessages


class CmMessageResult(BaseModel):
    to: str | None
    status: str = Field(..., description="Accepted or Rejected.")
    reference: str | None
    parts: int
    messageDetails: str | None
    messageErrorCode: int
    id: str | None = Field(None, description="The relay's message id (accepted ones; not in CM's API).")


class CmResponse(BaseModel):
    details: str
    errorCode: int = Field(
        ..., description="0, 101 authentication, 201 not all sent, 202 malformed, 203 no msg."
    )
    messages: list[CmMessageResult]


class TwilioMessage(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    sid: str = Field(..., description='"SM" and the relay\'s message id.')
    account_sid: str
    status: str = Field(..., description="queued, sent, delivered, undelivered or failed.")
    to: str
    sender: str = Field(..., alias="from")
    body: str
    num_segments: str
    date_created: str
    date_updated: str
    date_sent: str | None
    error_code: int | None
    error_message: str | None
    direction: str
    api_version: str
    uri: str


class TwilioErrorObject(BaseModel):
    code: int = Field(..., description="21211 invalid To, 21212 invalid From, 20003 authentication, ...")
    message: str
    more_info: str
    status: int


def _query(name: str, description: str, *, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }


IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "As on /v1/messages: a repeat gets the first answer and sends nothing.",
    "schema": {"type": "string", "maxLength": MAX_KEY_CHARS},
}

KANNEL_PARAMETERS = [
    _query("username", "The tenant.", required=True),
    _query("password", "The tenant's relay API key.", required=True),
    _query("to", "One or several numbers, separated by spaces.", required=True),
    _query("from", "The sender.", required=True),
    _query("text", "The text, in `charset`."),
    _query("charset", "Default WINDOWS-1252 (UTF-16BE with coding=2), as in Kannel."),
    _query("coding", "0 (7-bit) or 2 (UCS-2); 1 (8-bit data) is refused."),
    _query("validity", "Minutes the message may wait to be delivered."),
    _query("dlr-mask", "Accepted; reports are not sent anywhere without a dlr-url."),
    _query("dlr-url", "Empty or absent: delivery-report URLs are refused until the relay sends reports."),
    _query("udh", "Refused when set: the relay sends text messages."),
]

TWILIO_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["To", "From", "Body"],
                    "properties": {
                        "To": {"type": "string", "description": "E.164."},
                        "From": {"type": "string", "description": "A number or an alphanumeric sender ID."},
                        "Body": {"type": "string"},
                        "ValidityPeriod": {"type": "integer", "minimum": 1, "maximum": 36000},
                        "StatusCallback": {"type": "string", "description": "Refused: not supported yet."},
                    },
                }
            }
        },
    }
}
