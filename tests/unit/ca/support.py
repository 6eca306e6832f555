"""What the CA unit tests share: a fixed clock and the CA key types every test runs over."""

from __future__ import annotations

from datetime import UTC, datetime

from scep_server.config import CAConfig

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CA_KINDS = {
    "rsa2048": CAConfig(key_type="rsa", key_size=2048),
    "rsa3072": CAConfig(key_type="rsa", key_size=3072),
    "p256": CAConfig(key_type="ec", curve="P-256"),
    "p384": CAConfig(key_type="ec", curve="P-384"),
}
