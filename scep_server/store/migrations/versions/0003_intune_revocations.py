"""Intune revocation requests and the results owed to Intune.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

Written out by hand like 0001 and 0002.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "intune_revocations",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("request_context", sa.String(512), nullable=False),
        sa.Column("serial_number", sa.String(128), nullable=False),
        sa.Column("issuer_name", sa.Text(), nullable=True),
        sa.Column("ca_configuration", sa.Text(), nullable=True),
        _when("received_at"),
        sa.Column("result_code", sa.Integer(), nullable=True),
        sa.Column("result_message", sa.Text(), nullable=True),
        _when("processed_at", nullable=True),
        _when("uploaded_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_intune_revocations"),
        sa.UniqueConstraint("request_context", name="uq_intune_revocations_request_context"),
    )
    op.create_index(
        "ix_intune_revocations_uploaded_at_result_code", "intune_revocations", ["uploaded_at", "result_code"]
    )


def downgrade() -> None:
    op.drop_table("intune_revocations")
