"""Certificates bound to a device, device lifecycle sync state, and one-time challenge passwords.

Revision ID: 0010
Revises: 0009
Create Date: 2027-01-27

Written out by hand like 0001-0009. Two nullable columns on ``certificates`` (NULL on every existing
row: a certificate issued before carried no device id we looked for, and is left alone by the device
lifecycle sync), and two new tables, created empty.

``certificates.device_id`` is the id of the device behind the certificate, of the kind in
``device_id_kind`` (``intune``: Intune's managed device id; ``entra``: the Entra ID device id).
``device_hold_at`` is set while an ``ocsp-only`` profile's device is disabled: OCSP answers revoked
(certificateHold) and the CRL is untouched. ``device_sync_state`` keeps each Graph delta link.
``otp_challenges`` holds one-time challenge passwords by SHA-256 only.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch:
        batch.add_column(sa.Column("device_id", sa.String(64), nullable=True))
        batch.add_column(sa.Column("device_id_kind", sa.String(16), nullable=True))
        batch.add_column(sa.Column("device_hold_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_certificates_device_id", "certificates", ["device_id"])
    op.create_table(
        "device_sync_state",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("delta_link", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_device_sync_state"),
    )
    op.create_table(
        "otp_challenges",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("subject_pattern", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_by_transaction", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_otp_challenges"),
        sa.UniqueConstraint("secret_hash", name="uq_otp_challenges_secret_hash"),
    )
    op.create_index("ix_otp_challenges_profile_created_at_id", "otp_challenges", ["profile", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_otp_challenges_profile_created_at_id", table_name="otp_challenges")
    op.drop_table("otp_challenges")
    op.drop_table("device_sync_state")
    op.drop_index("ix_certificates_device_id", table_name="certificates")
    with op.batch_alter_table("certificates") as batch:
        batch.drop_column("device_hold_at")
        batch.drop_column("device_id_kind")
        batch.drop_column("device_id")
