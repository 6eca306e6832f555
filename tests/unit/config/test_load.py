"""Configuration loading: defaults, YAML, env overrides, and clear errors."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from scep_server.challenge.intune import IntuneChallengeConfig
from scep_server.challenge.static import StaticChallengeConfig
from scep_server.config import (
    FailureBudgetConfig,
    KeyType,
    ProfileConfig,
    SecretSource,
    ServerConfig,
    UnavailablePolicy,
    load_config,
)
from scep_server.errors import ConfigError

INTUNE_ENV = {"TENANT": "t", "AAD_APP_ID": "a"}
EXAMPLE = Path(__file__).parents[3] / "config" / "example.yaml"


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
        ("bogus: 1\n", "unknown key bogus"),
        ("data_dri: /srv\n", "unknown key data_dri (did you mean data_dir?)"),
        ("ca: {key_type: dsa}\n", "ca.key_type"),
        ("ca: {key_size: 1024}\n", "ca.key_size"),
        ("ca: {key_type: ec, curve: P-521}\n", "ca.curve"),
        ("profiles: {p: {hash: md5}}\n", "hash"),
        ("profiles: {p: {hash: sha1}}\n", "allow_sha1_signature"),
        ("profiles: {p: {min_rsa_bits: 512}}\n", "min_rsa_bits"),
        ("profiles: {p: {min_rsa_bits: 4096, max_rsa_bits: 2048}}\n", "min_rsa_bits must not exceed max_rsa_bits"),
        ("profiles: {p: {key_usage: [fly]}}\n", "unknown usage"),
        ("profiles: {p: {extended_key_usage: [teleport]}}\n", "unknown EKU"),
        ("profiles: {p: {challenge: {type: magic}}}\n",
         'challenge.type must be one of intune, otp, static, webhook, not "magic"'),
        ("profiles: {p: {challenge: [static]}}\n", "profiles.p.challenge must be a mapping"),
        ("profiles: {p: {challenge: {on_validator_unavailable: later}}}\n", "must be 'fail' or 'pending'"),
        ("profiles: {p: {challenge: {pending_timeout_minutes: 0}}}\n", "pending_timeout_minutes must be an int"),
        ("profiles: {'bad name!': {}}\n", "profile names"),
        ("profiles: []\n", "non-empty mapping"),
        ("public_url: ftp://x\n", "public_url"),
        ("- a list\n", "must hold a mapping"),
        ("key: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_config_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(_write(tmp_path, text), env={})


def test_invalid_env_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SCEP_SERVER_MAX_BODY_BYTES"):
        load_config(None, env={"SCEP_SERVER_MAX_BODY_BYTES": "lots"})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.yaml", env={})


@pytest.mark.parametrize("name", ["example.yaml", "dev.yaml"])
def test_shipped_configs_load(name: str) -> None:
    config = load_config(Path(__file__).parents[3] / "config" / name, env={"TENANT": "t", "AAD_APP_ID": "a"})
    assert config.profiles
    if name == "dev.yaml":
        assert {p.name for p in config.profiles} >= {"intune", "intune-pending", "default", "legacy"}
        assert config.intune.authority.startswith("https://127.0.0.1:")
    if name == "dev.yaml":
        pending = config.profile("intune-pending")
        assert pending is not None and pending.challenge == IntuneChallengeConfig(
            on_validator_unavailable=UnavailablePolicy.PENDING
        )


def test_each_challenge_type_has_its_own_section(tmp_path: Path) -> None:
    path = _write(tmp_path, """
profiles:
  corp: {challenge: {secret: {env: CORP}}}
  mdm: {challenge: {type: intune, pending_timeout_minutes: 5}}
""")
    corp, mdm = load_config(path, env=INTUNE_ENV).profiles
    assert corp.challenge == StaticChallengeConfig(secret=SecretSource(env="CORP"))
    assert mdm.challenge == IntuneChallengeConfig(pending_timeout_minutes=5)
    assert mdm.challenge.on_validator_unavailable is UnavailablePolicy.FAIL


def test_a_key_of_another_validator_is_unknown(tmp_path: Path) -> None:
    path = _write(tmp_path, "profiles: {mdm: {challenge: {type: intune, secret: x}}}\n")
    with pytest.raises(ConfigError, match=r"^unknown key profiles.mdm.challenge.secret$"):
        load_config(path, env=INTUNE_ENV)


def test_an_intune_profile_needs_the_intune_app(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a profile uses the intune challenge"):
        load_config(_write(tmp_path, "profiles: {mdm: {challenge: {type: intune}}}\n"), env={})


def test_on_intune_unavailable_is_a_deprecated_alias(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = _write(tmp_path, "profiles: {mdm: {challenge: {type: intune, on_intune_unavailable: pending}}}\n")
    with caplog.at_level(logging.WARNING, logger="scep_server.config"):
        profile = load_config(path, env=INTUNE_ENV).profiles[0]
    assert profile.challenge.on_validator_unavailable is UnavailablePolicy.PENDING
    assert [r.getMessage() for r in caplog.records] == [
        "profiles.mdm.challenge.on_intune_unavailable is deprecated: call it on_validator_unavailable"
    ]


def test_the_alias_and_the_new_name_together_are_an_error(tmp_path: Path) -> None:
    both = "{on_intune_unavailable: fail, on_validator_unavailable: fail}"
    path = _write(tmp_path, f"profiles: {{p: {{challenge: {both}}}}}\n")
    with pytest.raises(ConfigError, match="on_intune_unavailable is the old name of on_validator_unavailable"):
        load_config(path, env={})


def test_ca_key_type_is_an_enum(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "ca: {key_type: ec}\n"), env={}).ca.key_type is KeyType.EC
    assert load_config(None, env={}).ca.key_type is KeyType.RSA


# --- failure_budget ------------------------------------------------------------------------------------


def test_config_defaults_and_example_agree() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.failure_budget == FailureBudgetConfig() == FailureBudgetConfig(20, 60, 10000)
    assert config.profiles[0].allow_3des is ProfileConfig().allow_3des is True


def test_config_reads_the_budget_and_allow_3des(tmp_path: Path) -> None:
    text = "failure_budget: {max_failures: 5, window_seconds: 30}\nprofiles: {p: {allow_3des: false}}\n"
    config = load_config(_write(tmp_path, text), env={})
    assert config.failure_budget == FailureBudgetConfig(5, 30, 10000)
    assert config.profiles[0].allow_3des is False


@pytest.mark.parametrize("body", [
    "failure_budget: {max_failures: -1}",
    "failure_budget: {window_seconds: 0}",
    "failure_budget: {max_tracked_ips: 0}",
    "failure_budget: {max_failures: yes}",
    "failure_budget: {per_ip: 3}",
])
def test_config_refuses_bad_budgets(tmp_path: Path, body: str) -> None:
    with pytest.raises(ConfigError, match="failure_budget"):
        load_config(_write(tmp_path, body + "\n"), env={})


def test_budget_env_override_is_ignored() -> None:
    config = load_config(None, env={"SCEP_SERVER_FAILURE_BUDGET": "3"})
    assert config.failure_budget == FailureBudgetConfig()
