"""Tables of the store. The schema is made only by the Alembic migrations in ``migrations/``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, String, Text, TypeDecorator, false
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the key
    key_prefix: Mapped[str] = mapped_column(String(16))  # shown by `keys list` to tell keys apart
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class TenantAccount(Base):
    """A tenant's account SID: the user name of HTTP Basic auth on the Twilio-style API (the password
    is one of the tenant's API keys). Made with the tenant's first key; it never changes."""

    __tablename__ = "tenant_accounts"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_sid: Mapped[str] = mapped_column(String(34), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64))
    to_number: Mapped[str] = mapped_column(String(20))
    sender: Mapped[str] = mapped_column(String(20))  # validation allows "+" and 16 digits
    body: Mapped[str] = mapped_column(Text)
    client_reference: Mapped[str | None] = mapped_column(String(128), default=None)
    segments: Mapped[int] = mapped_column(Integer, default=1)
    encoding: Mapped[str] = mapped_column(String(8), default="gsm7")
    site: Mapped[str] = mapped_column(String(64))  # the site routing chose; attempts show where it went
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    ambiguous: Mapped[int] = mapped_column(Integer, default=0)  # attempts that may have made a duplicate
    accepted_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    # The message's own callback URL (None: the tenant's default, `tenant_callbacks`, if any).
    callback_url: Mapped[str | None] = mapped_column(String(2048), default=None)

    __table_args__ = (
        Index("ix_messages_tenant_accepted", "tenant", "accepted_at"),
        Index("ix_messages_status", "status"),
    )


class Attempt(Base):
    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(32))
    site: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime]
    latency_ms: Mapped[float | None] = mapped_column(Float, default=None)
    worker: Mapped[str] = mapped_column(String(128), default="")
    # A send of a job that may have been sent before (see `AttemptRecord.possible_duplicate`).
    possible_duplicate: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    # One row per reported attempt however often, and by however many recorders, the report is folded;
    # it serves the lookups by message too.
    __table_args__ = (
        Index("ux_attempts_report", "message_id", "attempt", "site", "outcome", "at", unique=True),
    )


class DeadLetter(Base):
    __tablename__ = "dead_letters"

    message_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(64), index=True)
    site: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(32), index=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    job: Mapped[dict[str, Any]]  # the whole job as it travelled, so a replay needs nothing else
    dead_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    replayed_at: Mapped[datetime | None] = mapped_column(default=None)
    replay_count: Mapped[int] = mapped_column(Integer, default=0)
    replayed_to_site: Mapped[str | None] = mapped_column(String(64), default=None)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    tenant: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Report(Base):
    """A delivery report from a platform, kept whole. `matched` is false for a report naming no message
    the relay knows (no relay id in it, or an id the store had no row of when it came): kept and counted,
    never dropped. A report repeated (the same bytes again) is kept once, by `key`."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    message_id: Mapped[str] = mapped_column(String(32), default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    site: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    platform_status: Mapped[str] = mapped_column(String(32), default="")
    error_code: Mapped[str] = mapped_column(String(16), default="")
    platform_id: Mapped[str] = mapped_column(String(64), default="")
    at: Mapped[datetime | None] = mapped_column(default=None)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    raw: Mapped[str] = mapped_column(Text, default="")
    matched: Mapped[bool] = mapped_column(Boolean, default=True)

    __table_args__ = (
        Index("ix_reports_message", "message_id", "attempt"),
        Index("ix_reports_unmatched", "matched", "received_at"),
    )
