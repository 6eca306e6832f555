"""The hash-chained audit log of state changes and its head.

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-06

Written out by hand like 0001-0006. New tables only, created empty: the chain starts with the first
state change after the upgrade, and the head row with the first append (so a freshly migrated
database still counts as empty for a restore).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def _digest(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.String(64), nullable=False)


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        _digest("prev_hash"),
        _digest("hash"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        _digest("last_hash"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
        sa.CheckConstraint("id = 1", name="ck_audit_head_one_row"),
    )


def downgrade() -> None:
    op.drop_table("audit_head")
    op.drop_table("audit_log")
