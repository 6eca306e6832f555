"""Initial schema: certificates, SCEP transactions, CRL numbers, audit log.

Revision ID: 0001
Revises:
Create Date: 2024-11-23

Written out by hand (not imported from tables.py) so that it keeps describing this revision when the
tables change later; tests/unit/store/test_migrations.py checks that head matches tables.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False)


def _when(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "certificates",
        _id(),
        sa.Column("serial_hex", sa.String(40), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("sans", sa.Text(), nullable=False),
        _when("not_before"),
        _when("not_after"),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("transaction_id", sa.String(255), nullable=True),
        sa.Column("requester_ip", sa.String(64), nullable=True),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("sha1_thumbprint", sa.String(40), nullable=False),
        sa.Column("sha256_thumbprint", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _when("issued_at"),
        _when("revoked_at", nullable=True),
        sa.Column("revocation_reason", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_certificates"),
        sa.UniqueConstraint("issuer", "serial_hex", name="uq_certificates_issuer_serial_hex"),
        sa.CheckConstraint("status IN ('valid', 'revoked')", name="ck_certificates_status"),
    )
    op.create_index("ix_certificates_profile_transaction_id", "certificates", ["profile", "transaction_id"])
    op.create_index("ix_certificates_subject", "certificates", ["subject"])
    op.create_index("ix_certificates_status", "certificates", ["status"])
    op.create_index("ix_certificates_issued_at", "certificates", ["issued_at"])

    op.create_table(
        "scep_transactions",
        _id(),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("transaction_id", sa.String(255), nullable=False),
        sa.Column("message_type", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("csr_sha256", sa.String(64), nullable=True),
        sa.Column("csr_der", sa.LargeBinary(), nullable=True),
        sa.Column("serial_hex", sa.String(40), nullable=True),
        sa.Column("certificate_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("fail_info", sa.Integer(), nullable=True),
        sa.Column("fail_reason", sa.Text(), nullable=True),
        sa.Column("requester_ip", sa.String(64), nullable=True),
        _when("created_at"),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_scep_transactions"),
        sa.UniqueConstraint("profile", "transaction_id", name="uq_scep_transactions_profile_transaction_id"),
        sa.CheckConstraint("state IN ('pending', 'issued', 'failed')", name="ck_scep_transactions_state"),
        sa.ForeignKeyConstraint(
            ["certificate_id"], ["certificates.id"], name="fk_scep_transactions_certificate_id_certificates"
        ),
    )
    op.create_index("ix_scep_transactions_state_updated_at", "scep_transactions", ["state", "updated_at"])

    op.create_table(
        "crl_state",
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("crl_number", sa.BigInteger(), nullable=False),
        _when("updated_at"),
        sa.PrimaryKeyConstraint("issuer", name="pk_crl_state"),
    )

    op.create_table(
        "scep_events",
        _id(),
        _when("occurred_at"),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("operation", sa.String(64), nullable=False),
        sa.Column("message_type", sa.Integer(), nullable=True),
        sa.Column("transaction_id", sa.String(255), nullable=True),
        sa.Column("outcome", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("requester_ip", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_scep_events"),
    )
    op.create_index("ix_scep_events_occurred_at", "scep_events", ["occurred_at"])
    op.create_index("ix_scep_events_profile_transaction_id", "scep_events", ["profile", "transaction_id"])


def downgrade() -> None:
    op.drop_table("scep_events")
    op.drop_table("crl_state")
    op.drop_table("scep_transactions")
    op.drop_table("certificates")
