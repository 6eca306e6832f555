"""The static validator: the profile's shared secret, compared in constant time."""

from __future__ import annotations

import pytest

from scep_server.challenge import Resources
from scep_server.challenge.static import StaticChallenge, StaticChallengeConfig
from scep_server.config import SecretSource
from scep_server.errors import ChallengeRejected, ConfigError

from .conftest import MakeRequest


def test_accepts_the_secret(make_request: MakeRequest) -> None:
    StaticChallenge("s3cret").validate(make_request(b"s3cret"))


@pytest.mark.parametrize(("password", "reason"), [
    (None, "ChallengePasswordMissing"),
    (b"wrong", "ChallengePasswordMismatch"),
    (b"s3cret ", "ChallengePasswordMismatch"),
])
def test_refuses_anything_else(make_request: MakeRequest, password: bytes | None, reason: str) -> None:
    with pytest.raises(ChallengeRejected) as refused:
        StaticChallenge("s3cret").validate(make_request(password))
    assert refused.value.reason == reason


def test_non_ascii_secrets_compare_as_utf8(make_request: MakeRequest) -> None:
    StaticChallenge("clé").validate(make_request("clé".encode()))


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty"):
        StaticChallenge("")


def test_built_from_its_section() -> None:
    settings = StaticChallengeConfig(secret=SecretSource(value="inline"))
    validator = StaticChallenge.from_settings("corp", settings, Resources())
    assert isinstance(validator, StaticChallenge) and not validator.validates_renewals
    with pytest.raises(ConfigError, match="profile 'corp': no static challenge secret \\(set challenge.secret\\)"):
        StaticChallenge.from_settings("corp", StaticChallengeConfig(secret=SecretSource()), Resources())


def test_the_section_defaults_to_the_scep_challenge_variable() -> None:
    assert StaticChallengeConfig().secret == SecretSource(env="SCEP_CHALLENGE")
    assert StaticChallengeConfig().type == "static"
