"""Configuration loading: defaults, YAML, env overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from scep_server.config import ServerConfig, load_config
from scep_server.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    config = load_config(None, env={})
    assert config == ServerConfig()
    assert [p.name for p in config.profiles] == ["default"]
    assert config.effective_database_url.startswith("sqlite:///")


def test_profiles_and_secrets_from_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, """
data_dir: /srv/scep
profiles:
  corp:
    challenge: {type: static, secret: {file: /run/secrets/challenge}}
    validity_days: 30
    key_usage: [digital_signature]
    extended_key_usage: [client_auth, 1.3.6.1.5.5.7.3.6]
  legacy:
    challenge: {secret: plain-dev-secret}
    allow_des: true
""")
    config = load_config(path, env={})
    corp, legacy = config.profiles
    assert corp.name == "corp" and corp.validity_days == 30
    assert corp.challenge.secret.file == "/run/secrets/challenge"
    assert corp.extended_key_usage == ("client_auth", "1.3.6.1.5.5.7.3.6")
    assert legacy.allow_des and legacy.challenge.secret.resolve() == "plain-dev-secret"
    assert config.profile("corp") is corp and config.profile("nope") is None


def test_secret_from_env_wins_over_inline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "profiles:\n  p:\n    challenge: {secret: {env: MY_CHALLENGE, value: fallback}}\n")
    profile = load_config(path, env={}).profiles[0]
    assert profile.challenge.secret.resolve() == "fallback"
    monkeypatch.setenv("MY_CHALLENGE", "from-env")
    assert profile.challenge.secret.resolve() == "from-env"


def test_env_overrides_top_level_keys(tmp_path: Path) -> None:
    config = load_config(None, env={"SCEP_SERVER_DATA_DIR": str(tmp_path), "SCEP_SERVER_MAX_BODY_BYTES": "4096"})
    assert config.data_dir == str(tmp_path) and config.max_body_bytes == 4096


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus: 1\n", "unknown key(s) in top level: bogus"),
        ("ca: {key_type: dsa}\n", "ca.key_type"),
        ("ca: {key_size: 1024}\n", "ca.key_size"),
        ("ca: {key_type: ec, curve: P-521}\n", "ca.curve"),
        ("profiles: {p: {hash: md5}}\n", "hash"),
        ("profiles: {p: {hash: sha1}}\n", "allow_sha1_signature"),
        ("profiles: {p: {min_rsa_bits: 512}}\n", "min_rsa_bits"),
        ("profiles: {p: {min_rsa_bits: 4096, max_rsa_bits: 2048}}\n", "min_rsa_bits must not exceed max_rsa_bits"),
        ("profiles: {p: {key_usage: [fly]}}\n", "unknown usage"),
        ("profiles: {p: {extended_key_usage: [teleport]}}\n", "unknown EKU"),
        ("profiles: {p: {challenge: {type: magic}}}\n", "challenge.type"),
        ("profiles: {'bad name!': {}}\n", "profile names"),
        ("profiles: []\n", "non-empty mapping"),
        ("public_url: ftp://x\n", "public_url"),
        ("- a list\n", "must hold a mapping"),
        ("key: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_config_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(_write(tmp_path, text), env={})


def test_invalid_env_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SCEP_SERVER_MAX_BODY_BYTES"):
        load_config(None, env={"SCEP_SERVER_MAX_BODY_BYTES": "lots"})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml", env={})


@pytest.mark.parametrize("name", ["example.yaml", "dev.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(Path(__file__).parents[2] / "config" / name, env={"TENANT": "t", "AAD_APP_ID": "a"})
    assert config.profiles
    if name == "dev.yaml":
        assert {p.name for p in config.profiles} >= {"intune", "intune-pending", "default", "legacy"}
        assert config.intune.authority.startswith("https://127.0.0.1:")
