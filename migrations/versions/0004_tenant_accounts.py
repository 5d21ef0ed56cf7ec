"""tenant_accounts: each tenant's account SID, for the Twilio-style API; existing tenants get one

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 12:00:00.000000
"""

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    accounts = op.create_table(
        "tenant_accounts",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("account_sid", sa.String(length=34), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
        sa.UniqueConstraint("account_sid"),
    )
    # Tenants whose keys exist already can use the Twilio-style API without a new key.
    tenants = op.get_bind().execute(sa.text("SELECT DISTINCT tenant FROM api_keys")).scalars().all()
    now = datetime.now(UTC)
    op.bulk_insert(
        accounts,
        [{"tenant": t, "account_sid": "AC" + secrets.token_hex(16), "created_at": now} for t in tenants],
    )


def downgrade() -> None:
    op.drop_table("tenant_accounts")
