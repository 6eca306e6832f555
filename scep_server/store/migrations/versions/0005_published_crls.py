"""Published CRLs: the CRL one process builds and every process serves.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-09

Written out by hand like 0001-0004. A new table only: databases of 0004 keep working as they are, and
the first CRL built after the upgrade is the first one stored.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def _when(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "published_crls",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("crl_number", sa.BigInteger(), nullable=False),
        _when("this_update"),
        _when("next_update"),
        sa.Column("revoked_count", sa.BigInteger(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        _when("published_at"),
        sa.PrimaryKeyConstraint("id", name="pk_published_crls"),
        sa.UniqueConstraint("issuer", "crl_number", name="uq_published_crls_issuer_crl_number"),
    )


def downgrade() -> None:
    op.drop_table("published_crls")
