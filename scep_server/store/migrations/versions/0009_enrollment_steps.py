"""The steps of each enrollment (Intune's answers and the notifications), and indexes for the reports.

Revision ID: 0009
Revises: 0008
Create Date: 2027-01-20

Written out by hand like 0001-0008. A new table, created empty, and indexes only: no rows change.
``enrollment_steps`` is read per transaction in time order, and searched by Intune's validateRequest
code. The report indexes give each listing its filter followed by its order (newest first), so a page
is read off an index instead of sorting every matching row: the expiry report (status, not_after), the
event reports (all events, or one outcome), a transaction's events, the enrollment search
(created_at) and an enrollment's notifications in the outbox.

Building the indexes reads each table once, and writes to it wait meanwhile: the server migrates at
start, before it takes requests.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_STEP_INDEXES: tuple[tuple[str, ...], ...] = (("transaction_id", "occurred_at", "id"), ("intune_code",))
_REPORT_INDEXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("certificates", ("status", "not_after", "id")),
    ("scep_events", ("outcome", "occurred_at", "id")),
    ("scep_events", ("occurred_at", "id")),
    ("scep_events", ("transaction_id",)),
    ("scep_transactions", ("created_at", "id")),
    ("intune_outbox", ("transaction_id",)),
)


def _name(table: str, columns: tuple[str, ...]) -> str:
    return f"ix_{table}_" + "_".join(columns)


def upgrade() -> None:
    op.create_table(
        "enrollment_steps",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("transaction_id", sa.String(255), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("intune_code", sa.String(64), nullable=True),
        sa.Column("activity_id", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_enrollment_steps"),
    )
    for columns in _STEP_INDEXES:
        op.create_index(_name("enrollment_steps", columns), "enrollment_steps", list(columns))
    for table, columns in _REPORT_INDEXES:
        op.create_index(_name(table, columns), table, list(columns))


def downgrade() -> None:
    for table, columns in _REPORT_INDEXES:
        op.drop_index(_name(table, columns), table_name=table)
    op.drop_table("enrollment_steps")
