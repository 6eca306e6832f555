"""Deferred SCEP transactions and the Intune outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2024-12-07

Written out by hand like 0001. The new NOT NULL columns carry constant server defaults, which both
SQLite's ALTER TABLE ADD COLUMN and PostgreSQL accept, so existing rows need no copy; only the SQLite
downgrade rebuilds the table (batch mode) to drop columns.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_NEW_TRANSACTION_COLUMNS = ("deferred", "attempts", "next_attempt_at", "last_error")


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("scep_transactions", sa.Column("deferred", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("scep_transactions", sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")))
    op.add_column("scep_transactions", _when("next_attempt_at", nullable=True))
    op.add_column("scep_transactions", sa.Column("last_error", sa.Text(), nullable=True))
    op.create_index(
        "ix_scep_transactions_deferred_next_attempt_at", "scep_transactions", ["deferred", "next_attempt_at"]
    )

    op.create_table(
        "intune_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("transaction_id", sa.String(255), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        _when("created_at"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        _when("next_attempt_at"),
        _when("delivered_at", nullable=True),
        _when("dead_at", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_intune_outbox"),
    )
    op.create_index(
        "ix_intune_outbox_delivered_at_dead_at_next_attempt_at",
        "intune_outbox",
        ["delivered_at", "dead_at", "next_attempt_at"],
    )


def downgrade() -> None:
    op.drop_table("intune_outbox")
    op.drop_index("ix_scep_transactions_deferred_next_attempt_at", "scep_transactions")
    with op.batch_alter_table("scep_transactions") as batch:
        for name in _NEW_TRANSACTION_COLUMNS:
            batch.drop_column(name)
