"""The validator registry: what registers, how a profile's validator is found and built, and what it answers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from scep_server.challenge import (
    ChallengeValidator,
    IssuedCertificate,
    Resources,
    ValidationRequest,
    build_validator,
    defers_when_unavailable,
    needs_intune,
    register,
    registered_types,
    validator_class,
)
from scep_server.challenge.intune import IntuneChallenge, IntuneChallengeConfig, IntuneLink
from scep_server.challenge.otp import OtpChallenge, OtpChallengeConfig
from scep_server.challenge.static import StaticChallenge, StaticChallengeConfig
from scep_server.challenge.webhook import WebhookChallenge, WebhookChallengeConfig
from scep_server.config import ChallengeConfig, ProfileConfig, SecretSource, UnavailablePolicy, load_config
from scep_server.config.sections import section_class
from scep_server.errors import ConfigError

UNKNOWN_MAGIC = "unknown challenge type 'magic'; the registered types are intune, otp, static, webhook"

@dataclass(frozen=True, slots=True)
class PinChallengeConfig(ChallengeConfig):
    type: str = "pin"
    digits: int = 6


class PinChallenge:
    """A validator defined outside the package, as a new module would define it."""

    name = "pin"
    validates_renewals = False
    confirms_issuance = True
    settings_class = PinChallengeConfig
    may_be_unavailable = False

    def __init__(self, digits: int) -> None:
        self.digits = digits

    @classmethod
    def from_settings(cls, profile: str, settings: ChallengeConfig, resources: Resources) -> ChallengeValidator:
        assert isinstance(settings, PinChallengeConfig)
        return cls(settings.digits)

    def validate(self, request: ValidationRequest) -> None: ...

    def notify_issued(self, request: ValidationRequest, issued: IssuedCertificate) -> None: ...

    def notify_failed(self, request: ValidationRequest, hresult: int, description: str) -> None: ...


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_the_package_registers_its_validators() -> None:
    assert registered_types() == ("intune", "otp", "static", "webhook")
    assert validator_class("static") is StaticChallenge and validator_class("intune") is IntuneChallenge
    assert validator_class("otp") is OtpChallenge and validator_class("webhook") is WebhookChallenge
    assert section_class("static") is StaticChallengeConfig and section_class("intune") is IntuneChallengeConfig
    assert section_class("otp") is OtpChallengeConfig and section_class("webhook") is WebhookChallengeConfig


def test_unknown_type_is_a_config_error_listing_the_registered_types() -> None:
    with pytest.raises(ConfigError, match=UNKNOWN_MAGIC):
        validator_class("magic")
    with pytest.raises(ConfigError, match=UNKNOWN_MAGIC):
        build_validator(ProfileConfig(challenge=ChallengeConfig(type="magic")), Resources())


@pytest.mark.usefixtures("isolated_registry")
def test_a_registered_validator_is_configured_and_built(tmp_path: Path) -> None:
    assert register(PinChallenge) is PinChallenge
    assert "pin" in registered_types()
    profile = load_config(_write(tmp_path, "profiles: {p: {challenge: {type: pin, digits: 8}}}\n"), env={}).profiles[0]
    assert profile.challenge == PinChallengeConfig(digits=8)
    validator = build_validator(profile, Resources())
    assert isinstance(validator, PinChallenge) and validator.digits == 8
    with pytest.raises(ConfigError, match=r"^unknown key profiles.p.challenge.secret$"):
        load_config(_write(tmp_path, "profiles: {p: {challenge: {type: pin, secret: x}}}\n"), env={})


@pytest.mark.usefixtures("isolated_registry")
def test_a_type_is_registered_once() -> None:
    @dataclass(frozen=True, slots=True)
    class Other(ChallengeConfig):
        type: str = "static"

    class Impostor(PinChallenge):
        name = "static"
        settings_class = Other

    with pytest.raises(ValueError, match="'static' is registered already"):
        register(Impostor)
    assert validator_class("static") is StaticChallenge
    register(StaticChallenge)  # the same class again is harmless


def test_a_bare_section_takes_the_validators_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCEP_CHALLENGE", "from-the-default-source")
    validator = build_validator(ProfileConfig(), Resources())  # ChallengeConfig(type="static")
    assert isinstance(validator, StaticChallenge)
    assert validator._secret == b"from-the-default-source"


def test_the_intune_validator_needs_its_link() -> None:
    profile = ProfileConfig(name="corp", challenge=IntuneChallengeConfig())
    with pytest.raises(ConfigError, match="profile 'corp': the intune challenge needs the intune settings"):
        build_validator(profile, Resources())
    link = IntuneLink(client=object(), notifier=object(), ca_configuration="host\\CA")  # type: ignore[arg-type]
    assert isinstance(build_validator(profile, Resources(("unrelated", link))), IntuneChallenge)


def test_questions_to_the_registry() -> None:
    assert needs_intune(IntuneChallengeConfig()) and needs_intune(ChallengeConfig(type="intune"))
    assert not needs_intune(StaticChallengeConfig())
    pending = UnavailablePolicy.PENDING
    assert defers_when_unavailable(IntuneChallengeConfig(on_validator_unavailable=pending))
    assert not defers_when_unavailable(IntuneChallengeConfig())
    # A shared secret is never unavailable: pending changes nothing.
    assert not defers_when_unavailable(StaticChallengeConfig(on_validator_unavailable=pending))


def test_resources_find_by_class() -> None:
    link = IntuneLink(client=object(), notifier=object(), ca_configuration="c")  # type: ignore[arg-type]
    resources = Resources(("text", link))
    assert resources.find(IntuneLink) is link and resources.find(str) == "text"
    assert Resources().find(IntuneLink) is None


def test_static_secret_missing_names_its_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNSET_SECRET_VAR", raising=False)
    profile = ProfileConfig(name="corp", challenge=StaticChallengeConfig(secret=SecretSource(env="UNSET_SECRET_VAR")))
    with pytest.raises(ConfigError, match="profile 'corp': no static challenge secret \\(set UNSET_SECRET_VAR\\)"):
        build_validator(profile, Resources())
