"""delivery_reports: `delivered` (a platform took it) becomes `sent`; the reports table

A platform taking a message was `delivered`; that word now means the handset received it, as a platform's
delivery report says. Stored rows follow. Reports are kept whole in `reports`, matched ones by message and
attempt, unmatched ones with `matched` false.

Revision ID: 0006_delivery_reports
Revises: 0005
Create Date: 2026-12-01 16:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_delivery_reports"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE messages SET status = 'sent' WHERE status = 'delivered'")
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("platform", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("platform_status", sa.String(length=32), nullable=False),
        sa.Column("error_code", sa.String(length=16), nullable=False),
        sa.Column("platform_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("matched", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_reports_message", "reports", ["message_id", "attempt"])
    op.create_index("ix_reports_unmatched", "reports", ["matched", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_reports_unmatched", table_name="reports")
    op.drop_index("ix_reports_message", table_name="reports")
    op.drop_table("reports")
    # Before reports the relay knew only that a platform took a message.
    op.execute("UPDATE messages SET status = 'delivered' WHERE status IN ('sent', 'undelivered')")
