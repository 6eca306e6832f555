"""The configuration keys of findings 5 and 8: the stale-claim lease, GetCert's scope, the signer subject."""

from __future__ import annotations

from pathlib import Path

import pytest

from scep_server.config import load_config
from scep_server.errors import ConfigError


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "scep.yaml"
    path.write_text(text)
    return load_config(path, env=env or {})


def test_finding5_and_finding8_defaults_are_the_safe_ones(tmp_path: Path) -> None:
    config = _load(tmp_path, "profiles: {default: {}}\n")
    assert config.transaction_lease_seconds == 300
    profile = config.profiles[0]
    assert profile.get_cert == "own" and profile.require_signer_subject is False


def test_finding5_transaction_lease_is_configurable_and_bounded(tmp_path: Path) -> None:
    assert _load(tmp_path, "transaction_lease_seconds: 2\n").transaction_lease_seconds == 2
    assert _load(tmp_path, "", {"SCEP_SERVER_TRANSACTION_LEASE_SECONDS": "30"}).transaction_lease_seconds == 30
    for bad in (0, 86401):
        with pytest.raises(ConfigError, match="transaction_lease_seconds"):
            _load(tmp_path, f"transaction_lease_seconds: {bad}\n")


def test_finding8_get_cert_takes_own_or_any(tmp_path: Path) -> None:
    config = _load(tmp_path, "profiles: {peers: {get_cert: any, require_signer_subject: true}}\n")
    assert config.profiles[0].get_cert == "any" and config.profiles[0].require_signer_subject is True
    with pytest.raises(ConfigError, match="get_cert"):
        _load(tmp_path, "profiles: {peers: {get_cert: everyone}}\n")
