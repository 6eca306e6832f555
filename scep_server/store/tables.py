"""The database schema as SQLAlchemy Core tables; the migrations, applied in order, create exactly these.

Serial numbers are up to 160 bits (RFC 5280 §4.1.2.2 allows 20 octets), more than any portable integer
column holds, so they are kept as lowercase hex text without leading zeros (``serial_hex``).
Datetimes are stored timezone-aware and always read back in UTC (see ``UTCDateTime``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

PROFILE_LENGTH = 64
TRANSACTION_ID_LENGTH = 255
IP_LENGTH = 64
SERIAL_HEX_LENGTH = 40
LABEL_LENGTH = 64
OUTBOX_KIND_LENGTH = 64
DIGEST_LENGTH = 64  # hex SHA-256
DEVICE_ID_LENGTH = 64

metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that only accepts aware values and always returns UTC-aware ones.

    SQLite has no timezone support: values are converted to UTC before they are written, and the naive
    values SQLite returns are marked as UTC on the way back.
    """

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError("naive datetime given to the store; pass a timezone-aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _id_column() -> Column[int]:
    # SQLite only autoincrements an INTEGER PRIMARY KEY.
    return Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True)


certificates = Table(
    "certificates",
    metadata,
    _id_column(),
    Column("serial_hex", String(SERIAL_HEX_LENGTH), nullable=False),
    Column("issuer", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("sans", Text, nullable=False),
    Column("not_before", UTCDateTime(), nullable=False),
    Column("not_after", UTCDateTime(), nullable=False),
    Column("profile", String(PROFILE_LENGTH), nullable=False),
    Column("transaction_id", String(TRANSACTION_ID_LENGTH), nullable=True),
    Column("requester_ip", String(IP_LENGTH), nullable=True),
    Column("der", LargeBinary, nullable=False),
    Column("sha1_thumbprint", String(40), nullable=False),
    Column("sha256_thumbprint", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("issued_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime(), nullable=True),
    Column("revocation_reason", Integer, nullable=True),
    UniqueConstraint("issuer", "serial_hex"),
    CheckConstraint("status IN ('valid', 'revoked')", name="status"),
    Index(None, "profile", "transaction_id"),
    Index(None, "subject"),
    # Each listing's equality filter, then its order (newest first): a page is read off the index, unsorted.
    Index(None, "issued_at", "id"),
    Index(None, "status", "issued_at", "id"),
    Index(None, "profile", "issued_at", "id"),
    Index(None, "profile", "status", "issued_at", "id"),
    # The CRL's scan of one issuer's revoked serials in order; serial_hex alone finds any issuer's serial.
    Index(None, "issuer", "status", "serial_hex"),
    Index(None, "serial_hex"),
    # The device behind the certificate (0010): Intune's managed device id or the Entra ID device id, by
    # device_id_kind; device_hold_at while an ocsp-only profile's device is disabled.
    Column("device_id", String(DEVICE_ID_LENGTH), nullable=True),
    Column("device_id_kind", String(16), nullable=True),
    Column("device_hold_at", UTCDateTime(), nullable=True),
    Index(None, "device_id"),
    # The expiry report: valid certificates by end of validity.
    Index(None, "status", "not_after", "id"),
)

transactions = Table(
    "scep_transactions",
    metadata,
    _id_column(),
    Column("profile", String(PROFILE_LENGTH), nullable=False),
    Column("transaction_id", String(TRANSACTION_ID_LENGTH), nullable=False),
    Column("message_type", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("csr_sha256", String(64), nullable=True),
    Column("csr_der", LargeBinary, nullable=True),
    # The transaction's certificate. On an ISSUED row it was delivered; on a PENDING row it is stored but
    # not delivered yet (its handler is acknowledging it, or died doing so: a reclaim re-delivers it).
    Column("serial_hex", String(SERIAL_HEX_LENGTH), nullable=True),
    Column("certificate_id", ForeignKey("certificates.id"), nullable=True),
    Column("fail_info", Integer, nullable=True),
    Column("fail_reason", Text, nullable=True),
    Column("requester_ip", String(IP_LENGTH), nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # A PENDING transaction whose challenge could not be decided yet (Intune unreachable) is deferred:
    # a background worker retries it at next_attempt_at instead of the next client poll.
    Column("deferred", Boolean(), nullable=False, server_default=false()),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    # Who may poll the transaction (RFC 8894 §3.3.3): SHA-256 of the request signer's public key (DER
    # SubjectPublicKeyInfo) and of the CSR subject's normalised form. NULL on rows older than 0004.
    Column("signer_key_sha256", String(DIGEST_LENGTH), nullable=True),
    Column("subject_sha256", String(DIGEST_LENGTH), nullable=True),
    UniqueConstraint("profile", "transaction_id"),
    CheckConstraint("state IN ('pending', 'issued', 'failed')", name="state"),
    Index(None, "state", "updated_at"),
    Index(None, "deferred", "next_attempt_at"),
    Index(None, "created_at", "id"),  # the enrollment search, newest first
)

crl_state = Table(
    "crl_state",
    metadata,
    Column("issuer", Text, primary_key=True),
    Column("crl_number", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

scep_events = Table(
    "scep_events",
    metadata,
    _id_column(),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("profile", String(PROFILE_LENGTH), nullable=False),
    Column("operation", String(LABEL_LENGTH), nullable=False),
    Column("message_type", Integer, nullable=True),
    Column("transaction_id", String(TRANSACTION_ID_LENGTH), nullable=True),
    Column("outcome", String(LABEL_LENGTH), nullable=False),
    Column("detail", Text, nullable=True),
    Column("requester_ip", String(IP_LENGTH), nullable=True),
    Index(None, "occurred_at"),
    Index(None, "profile", "transaction_id"),
    # The event reports, newest first: all of them, or those of one outcome; and a transaction's events.
    Index(None, "outcome", "occurred_at", "id"),
    Index(None, "occurred_at", "id"),
    Index(None, "transaction_id"),
)

# Notifications that must reach Intune even if the process restarts before sending them: stored first,
# then delivered and retried by a background worker. payload is a JSON object.
intune_outbox = Table(
    "intune_outbox",
    metadata,
    _id_column(),
    Column("kind", String(OUTBOX_KIND_LENGTH), nullable=False),
    Column("transaction_id", String(TRANSACTION_ID_LENGTH), nullable=True),
    Column("payload", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("delivered_at", UTCDateTime(), nullable=True),
    Column("dead_at", UTCDateTime(), nullable=True),
    Column("last_error", Text, nullable=True),
    Index(None, "delivered_at", "dead_at", "next_attempt_at"),
    Index(None, "transaction_id"),  # the notifications of one enrollment
)

# What happened to one enrollment beyond its SCEP messages (store/steps.py): Intune's validateRequest
# answer (intune_code, and the activity id the call ran under), the success and failure notifications.
enrollment_steps = Table(
    "enrollment_steps",
    metadata,
    _id_column(),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("profile", String(PROFILE_LENGTH), nullable=False),
    Column("transaction_id", String(TRANSACTION_ID_LENGTH), nullable=False),
    Column("step", String(LABEL_LENGTH), nullable=False),
    Column("outcome", String(LABEL_LENGTH), nullable=False),
    Column("intune_code", String(LABEL_LENGTH), nullable=True),
    Column("activity_id", String(LABEL_LENGTH), nullable=True),
    Column("detail", Text, nullable=True),
    Index(None, "transaction_id", "occurred_at", "id"),
    Index(None, "intune_code"),
)

REQUEST_CONTEXT_LENGTH = 512

intune_revocations = Table(
    "intune_revocations",
    metadata,
    _id_column(),
    Column("request_context", String(REQUEST_CONTEXT_LENGTH), nullable=False),
    Column("serial_number", String(128), nullable=False),
    Column("issuer_name", Text, nullable=True),
    Column("ca_configuration", Text, nullable=True),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("result_code", Integer, nullable=True),
    Column("result_message", Text, nullable=True),
    Column("processed_at", UTCDateTime(), nullable=True),
    Column("uploaded_at", UTCDateTime(), nullable=True),
    UniqueConstraint("request_context"),
    Index(None, "uploaded_at", "result_code"),
)

# The CRL every process serves (store/crls.py): built by one of them, kept with the count of revoked
# certificates it covers so a reader that has counted more knows it is missing a revocation.
published_crls = Table(
    "published_crls",
    metadata,
    _id_column(),
    Column("issuer", Text, nullable=False),
    Column("crl_number", BigInteger, nullable=False),
    Column("this_update", UTCDateTime(), nullable=False),
    Column("next_update", UTCDateTime(), nullable=False),
    Column("revoked_count", BigInteger, nullable=False),
    Column("der", LargeBinary, nullable=False),
    Column("published_at", UTCDateTime(), nullable=False),
    UniqueConstraint("issuer", "crl_number"),
)

# The hash-chained log of state changes (store/audit_chain.py). A row's id is its place in the chain,
# given under the chain's lock as the head's last_id + 1: no sequence, so a rolled-back append leaves
# no gap. detail is a small JSON object as text; hash covers every other column and prev_hash.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("actor", Text, nullable=False),
    Column("source", String(LABEL_LENGTH), nullable=False),
    Column("action", String(LABEL_LENGTH), nullable=False),
    Column("subject", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(DIGEST_LENGTH), nullable=False),
    Column("hash", String(DIGEST_LENGTH), nullable=False),
)

# The chain's last row as of each append, written in the same transaction: rows deleted from the end
# leave a head naming a row that is not there. One row (id 1), from the first append on.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_id", BigInteger, nullable=False),
    Column("last_hash", String(DIGEST_LENGTH), nullable=False),
    CheckConstraint("id = 1", name="one_row"),
)

TOKEN_NAME_LENGTH = 64
TOKEN_PREFIX_LENGTH = 8

# Named API tokens (store/tokens.py). Only the SHA-256 of a token is kept, and its first characters to
# tell tokens apart in listings; scopes is a comma-separated list (read, revoke, admin).
api_tokens = Table(
    "api_tokens",
    metadata,
    _id_column(),
    Column("name", String(TOKEN_NAME_LENGTH), nullable=False),
    Column("scopes", String(LABEL_LENGTH), nullable=False),
    Column("token_hash", String(DIGEST_LENGTH), nullable=False),
    Column("prefix", String(TOKEN_PREFIX_LENGTH), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("last_used_at", UTCDateTime(), nullable=True),
    Column("revoked_at", UTCDateTime(), nullable=True),
    UniqueConstraint("name"),
    UniqueConstraint("token_hash"),
)

# The device lifecycle sync's place in each Graph delta query (service/device_lifecycle.py).
device_sync_state = Table(
    "device_sync_state",
    metadata,
    Column("name", String(LABEL_LENGTH), primary_key=True),
    Column("delta_link", Text, nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# One-time challenge passwords (challenge type otp), kept as SHA-256 only; used_at is set by the one
# enrollment that consumes the password, in a conditional UPDATE, so two replicas cannot both use it.
otp_challenges = Table(
    "otp_challenges",
    metadata,
    _id_column(),
    Column("profile", String(PROFILE_LENGTH), nullable=False),
    Column("secret_hash", String(DIGEST_LENGTH), nullable=False),
    Column("subject_pattern", Text, nullable=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("created_by", Text, nullable=False),
    Column("used_at", UTCDateTime(), nullable=True),
    Column("used_by_transaction", String(TRANSACTION_ID_LENGTH), nullable=True),
    UniqueConstraint("secret_hash"),
    Index(None, "profile", "created_at", "id"),
)
