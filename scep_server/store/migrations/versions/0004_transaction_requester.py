"""Who may poll a transaction: the request signer's key and the CSR subject, as digests.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Written out by hand like 0001-0003. Both columns are nullable without a default, so SQLite's ALTER TABLE
ADD COLUMN and PostgreSQL take them as they are; rows written before have NULL there, and a CertPoll of
such a transaction is refused (fail closed: the device sends its PKCSReq again). Only the SQLite
downgrade rebuilds the table (batch mode) to drop the columns.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_NEW_TRANSACTION_COLUMNS = ("signer_key_sha256", "subject_sha256")


def upgrade() -> None:
    for name in _NEW_TRANSACTION_COLUMNS:
        op.add_column("scep_transactions", sa.Column(name, sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scep_transactions") as batch:
        for name in _NEW_TRANSACTION_COLUMNS:
            batch.drop_column(name)
