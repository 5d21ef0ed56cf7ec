"""callbacks: a message's callback URL, tenants' default URL and signing secrets, dead callbacks

Revision ID: 0007_callbacks
Revises: 0005
Create Date: 2026-12-02 10:00:00.000000

It touches only `messages` and tables of its own, so it can follow any revision that keeps `messages`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_callbacks"
down_revision: str | None = "0006_delivery_reports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("callback_url", sa.String(length=2048), nullable=True))
    op.create_table(
        "tenant_callbacks",
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("callback_url", sa.String(length=2048), nullable=True),
        sa.Column("secret", sa.String(length=128), nullable=True),
        sa.Column("previous_secret", sa.String(length=128), nullable=True),
        sa.Column("previous_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant"),
    )
    op.create_table(
        "callback_dead_letters",
        sa.Column("event_id", sa.String(length=32), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("job", sa.JSON(), nullable=False),
        sa.Column("dead_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("replay_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    for column in ("message_id", "tenant", "reason", "dead_at"):
        op.create_index(f"ix_callback_dead_letters_{column}", "callback_dead_letters", [column])


def downgrade() -> None:
    for column in ("message_id", "tenant", "reason", "dead_at"):
        op.drop_index(f"ix_callback_dead_letters_{column}", table_name="callback_dead_letters")
    op.drop_table("callback_dead_letters")
    op.drop_table("tenant_callbacks")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("callback_url")
