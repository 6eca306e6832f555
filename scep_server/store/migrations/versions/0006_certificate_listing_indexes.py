"""Indexes for the certificate listings and the per-issuer scan of revoked serials.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-16

Written out by hand like 0001-0005. Indexes only, no rows change. Each list query (newest first, by
status, by profile, by both) and the CRL's scan of one issuer's revoked serials in serial order gets
an index whose columns are its equality filters followed by its order, so a page is read straight off
the index instead of sorting every matching row, or reading them all to find a rare combination. The
single-column status and issued_at indexes are prefixes of the new ones and are dropped. serial_hex
alone serves a lookup that names no issuer (``certs show``).

Building them reads the whole table (about half a minute per million certificates on SQLite), and
writes to certificates wait meanwhile: the server migrates at start, before it takes requests.
"""

from __future__ import annotations

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_NEW_INDEXES: tuple[tuple[str, ...], ...] = (
    ("status", "issued_at", "id"),
    ("profile", "issued_at", "id"),
    ("profile", "status", "issued_at", "id"),
    ("issued_at", "id"),
    ("issuer", "status", "serial_hex"),
    ("serial_hex",),
)
_REPLACED_INDEXES: tuple[tuple[str, ...], ...] = (("status",), ("issued_at",))


def _name(columns: tuple[str, ...]) -> str:
    return "ix_certificates_" + "_".join(columns)


def upgrade() -> None:
    for columns in _NEW_INDEXES:
        op.create_index(_name(columns), "certificates", list(columns))
    for columns in _REPLACED_INDEXES:
        op.drop_index(_name(columns), table_name="certificates")


def downgrade() -> None:
    for columns in _REPLACED_INDEXES:
        op.create_index(_name(columns), "certificates", list(columns))
    for columns in _NEW_INDEXES:
        op.drop_index(_name(columns), table_name="certificates")
