"""The registry of challenge sections the validators fill, as configuration sees it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import scep_server.config.sections as sections
from scep_server.challenge.intune import IntuneChallengeConfig
from scep_server.challenge.static import StaticChallengeConfig
from scep_server.config import ChallengeConfig
from scep_server.config.sections import register_section, registered_types, section_class
from scep_server.errors import ConfigError

UNKNOWN_MAGIC = "unknown challenge type 'magic'; the registered types are intune, otp, static, webhook"

@dataclass(frozen=True, slots=True)
class RadiusChallengeConfig(ChallengeConfig):
    type: str = "radius"
    url: str = "https://hooks.example/"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sections, "_SECTIONS", dict(sections._SECTIONS))


def test_the_validators_sections_are_registered_on_first_lookup() -> None:
    assert registered_types() == ("intune", "otp", "static", "webhook")
    assert section_class("static") is StaticChallengeConfig
    assert section_class("intune") is IntuneChallengeConfig and IntuneChallengeConfig.needs_intune
    assert not StaticChallengeConfig.needs_intune and not ChallengeConfig.needs_intune


def test_unknown_type_lists_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=UNKNOWN_MAGIC):
        section_class("magic")


def test_register_a_section() -> None:
    register_section("radius", RadiusChallengeConfig)
    register_section("radius", RadiusChallengeConfig)  # again: harmless
    assert section_class("radius") is RadiusChallengeConfig
    assert registered_types() == ("intune", "otp", "radius", "static", "webhook")


def test_a_name_has_one_section() -> None:
    with pytest.raises(ValueError, match="'static' is registered already"):
        register_section("static", RadiusChallengeConfig)


def test_sections_extend_challenge_config() -> None:
    with pytest.raises(TypeError, match="does not extend ChallengeConfig"):
        register_section("odd", dict)  # type: ignore[arg-type]
