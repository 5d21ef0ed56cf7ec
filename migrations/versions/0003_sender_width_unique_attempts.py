"""messages.sender holds what validation accepts; one attempts row per reported attempt

A numeric sender may be "+" and 16 digits, one character more than the column held: on PostgreSQL the
whole group commit of such a row failed. Attempts are matched on (message, attempt, site, outcome, at)
by a unique index, so recorders folding the same report at once cannot both insert it; duplicates left by
earlier races are removed first.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-08 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_REPORT = ["message_id", "attempt", "site", "outcome", "at"]


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.alter_column(
            "sender", existing_type=sa.String(length=16), type_=sa.String(length=20), existing_nullable=False
        )
    op.execute(
        f"DELETE FROM attempts WHERE id NOT IN (SELECT min(id) FROM attempts GROUP BY {', '.join(_REPORT)})"
    )
    with op.batch_alter_table("attempts") as batch:
        batch.drop_index("ix_attempts_message_id")
        batch.create_index("ux_attempts_report", _REPORT, unique=True)


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_index("ux_attempts_report")
        batch.create_index("ix_attempts_message_id", ["message_id"], unique=False)
    # Senders longer than 16 characters are cut to fit the narrower column.
    op.execute("UPDATE messages SET sender = substr(sender, 1, 16) WHERE length(sender) > 16")
    with op.batch_alter_table("messages") as batch:
        batch.alter_column(
            "sender", existing_type=sa.String(length=20), type_=sa.String(length=16), existing_nullable=False
        )
