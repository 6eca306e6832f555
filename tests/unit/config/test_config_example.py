"""config/example.yaml is "every setting with its default": it loads to the dataclasses' defaults, and lists
every field of every section (a default changed in the code, or a setting added, fails here)."""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from scep_server.challenge.static import StaticChallengeConfig
from scep_server.config import ProfileConfig, SecretSource, ServerConfig, load_config
from scep_server.config.parsing import field_types

EXAMPLE = Path(__file__).parents[3] / "config" / "example.yaml"
# Fields that are no key of their own in YAML: the key backend's settings are the section its type names.
NOT_KEYS = frozenset({"ca.keys.settings"})


def test_every_value_in_the_example_is_the_default() -> None:
    config = load_config(EXAMPLE, env={})
    assert replace(config, profiles=()) == replace(ServerConfig(), profiles=())
    # The example's profile spells out the static validator's section, which a bare profile defaults to.
    assert config.profiles == (replace(ProfileConfig(), challenge=StaticChallengeConfig()),)


def test_every_setting_appears_in_the_example() -> None:
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    missing = _missing(ServerConfig, raw, "", skip={"profiles"})
    [profile] = raw["profiles"].values()
    missing += _missing(ProfileConfig, profile, "profiles.default", skip={"name", "challenge"})
    missing += _missing(StaticChallengeConfig, profile["challenge"], "profiles.default.challenge")
    assert not missing, f"config/example.yaml does not list {', '.join(missing)}"


def test_the_check_finds_a_missing_setting() -> None:
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    del raw["ca"]["curve"], raw["log_format"]
    assert _missing(ServerConfig, raw, "", skip={"profiles"}) == ["log_format", "ca.curve"]


def _missing(cls: type, raw: dict[str, Any], where: str, *, skip: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """The fields of ``cls`` (and of its nested sections) that ``raw`` does not name."""
    hints = field_types(cls)
    missing: list[str] = []
    for f in fields(cls):
        name = f"{where}.{f.name}" if where else f.name
        if f.name in skip or name in NOT_KEYS:
            continue
        if f.name not in raw:
            missing.append(name)
        elif is_dataclass(hints[f.name]) and hints[f.name] is not SecretSource:  # a secret is one value
            missing += _missing(hints[f.name], raw[f.name], name)
    return missing
