"""Every key is checked against its dataclass field's type, every problem is one line naming the key, the
value and what is allowed, and all of them are reported at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

from scep_server.config import KeyType, SecretSource, load_config
from scep_server.config.parsing import Problems, from_text, parse_section, shown, typed_value
from scep_server.errors import ConfigError


class Shade(StrEnum):
    LIGHT = "light"
    DARK = "dark"


@dataclass(frozen=True, slots=True)
class Inner:
    size: int = 1


@dataclass(frozen=True, slots=True)
class Outer:
    flag: bool = False
    count: int = 0
    ratio: float = 1.0
    label: str = "x"
    port: int | None = None
    names: tuple[str, ...] = ()
    optional_names: tuple[str, ...] | None = None
    shade: Shade = Shade.LIGHT
    secret: SecretSource = field(default_factory=SecretSource)
    inner: Inner = field(default_factory=Inner)


@pytest.mark.parametrize(("raw", "value"), [
    ({"flag": True}, Outer(flag=True)),
    ({"count": 3, "ratio": 2}, Outer(count=3, ratio=2.0)),
    ({"port": None, "label": "y"}, Outer(label="y")),
    ({"names": ["a", "b"], "optional_names": None}, Outer(names=("a", "b"))),
    ({"names": None}, Outer()),
    ({"shade": "dark", "secret": {"env": "E"}}, Outer(shade=Shade.DARK, secret=SecretSource(env="E"))),
    ({"inner": {"size": 5}}, Outer(inner=Inner(5))),
    ({"inner": None}, Outer()),
])  # fmt: skip
def test_values_of_each_type(raw: dict[str, Any], value: Outer) -> None:
    parsed = parse_section(Outer, raw, "s")
    assert parsed == value
    assert type(parsed.ratio) is float


@pytest.mark.parametrize(("raw", "message"), [
    ({"flag": "yes"}, 's.flag must be true or false, not "yes"'),
    ({"flag": 1}, "s.flag must be true or false, not 1"),
    ({"count": True}, "s.count must be an integer, not true"),
    ({"count": "3"}, 's.count must be an integer, not "3"'),
    ({"count": 2.5}, "s.count must be an integer, not 2.5"),
    ({"ratio": False}, "s.ratio must be a number, not false"),
    ({"label": 42}, "s.label must be a string (quote it), not 42"),
    ({"label": None}, "s.label must be a string, not null"),
    ({"port": "abc"}, 's.port must be an integer or null, not "abc"'),
    ({"names": "a"}, 's.names must be a list of strings, not "a"'),
    ({"names": ["a", 2]}, "s.names[1] must be a string (quote it), not 2"),
    ({"optional_names": {"a": 1}}, 's.optional_names must be a list of strings, not {"a": 1}'),
    ({"shade": "grey"}, "s.shade must be 'light' or 'dark', not \"grey\""),
    ({"secret": ["x"]}, 's.secret must be a string or a mapping with env/file/value, not ["x"]'),
    ({"inner": 5}, "s.inner must be a mapping of settings, not 5"),
    ({"inner": {"size": "big"}}, 's.inner.size must be an integer, not "big"'),
])  # fmt: skip
def test_each_problem_names_the_key_the_value_and_what_is_allowed(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_section(Outer, raw, "s")
    assert str(refused.value) == message


def test_all_problems_of_a_section_at_once() -> None:
    problems = Problems()
    section = parse_section(Outer, {"flag": "no", "count": "x", "colour": 1, "inner": {"sise": 2}}, "s",
                            problems=problems)
    assert problems.lines == (
        "unknown key s.colour",
        's.flag must be true or false, not "no"',
        's.count must be an integer, not "x"',
        "unknown key s.inner.sise (did you mean size?)",
    )
    assert section == Outer()  # the values in error keep their defaults


def test_shown_values_stay_on_one_line() -> None:
    assert shown("a\nb\x1b") == '"a\\nb\\u001b"'
    assert shown("x" * 200).endswith('...') and len(shown("x" * 200)) == 80
    assert shown(None) == "null" and shown(True) == "true"


@pytest.mark.parametrize(("hint", "text", "value"), [
    (bool, "TRUE", True), (bool, "off", False), (int, " 42 ", 42), (float, "0.5", 0.5), (str, "x", "x"),
    (int | None, "7", 7),
])  # fmt: skip
def test_environment_text_as_the_setting_type(hint: Any, text: str, value: object) -> None:
    assert from_text(hint, text, "VAR") == value


@pytest.mark.parametrize(("hint", "text", "message"), [
    (bool, "maybe", 'VAR must be true or false, not "maybe"'),
    (int, "3x", 'VAR must be an integer, not "3x"'),
    (float, "fast", 'VAR must be a number, not "fast"'),
])  # fmt: skip
def test_environment_text_that_is_not_the_type(hint: Any, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^{message}$"):
        from_text(hint, text, "VAR")


def test_typed_value_of_an_enum() -> None:
    assert typed_value(KeyType, "ec", "ca.key_type") is KeyType.EC


# --- the whole configuration ------------------------------------------------------------------------------


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "scep.yaml"
    path.write_text(text)
    return load_config(path, env=env or {})


def _problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        _load(tmp_path, text, env)
    return str(refused.value).splitlines()


def test_log_format_and_level_from_the_environment(tmp_path: Path) -> None:
    config = _load(tmp_path, "log_level: warning\n", {"SCEP_SERVER_LOG_FORMAT": "json"})
    assert (config.log_format, config.log_level) == ("json", "WARNING")
    assert _load(tmp_path, "", {"SCEP_SERVER_LOG_LEVEL": "debug"}).log_level == "DEBUG"
    assert _problems(tmp_path, "log_level: 10\nlog_format: xml\n") == [
        "log_level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (in any case), not 10",
        'log_format must be text or json, not "xml"',
    ]


def test_an_environment_value_is_named_by_its_variable(tmp_path: Path) -> None:
    env = {"SCEP_SERVER_MAX_BODY_BYTES": "10", "SCEP_SERVER_TRUSTED_PROXY_HOPS": "x", "PROXY_PORT": "0"}
    assert _problems(tmp_path, "max_body_bytes: 4096\n", env) == [
        'SCEP_SERVER_TRUSTED_PROXY_HOPS must be an integer, not "x"',
        "PROXY_PORT must be an integer from 1 to 65535, not 0",
        "SCEP_SERVER_MAX_BODY_BYTES must be an integer >= 1024, not 10",
    ]
    intune = _load(tmp_path, "", {"PROXY_PORT": "3128", "PROXY_HOST": "", "TENANT": "t"}).intune
    assert (intune.proxy_port, intune.proxy_host, intune.tenant) == (3128, None, "t")
    # An empty variable (as compose files leave them) is an unset one.
    config = _load(tmp_path, "public_url: https://scep.example\n", {"SCEP_SERVER_PUBLIC_URL": "",
                                                                     "SCEP_SERVER_MAX_BODY_BYTES": ""})
    assert (config.public_url, config.max_body_bytes) == ("https://scep.example", 256 * 1024)


def test_every_unknown_key_of_every_section_at_once(tmp_path: Path) -> None:
    text = """
publik_url: http://x
ca: {nmae: x}
intune: {tennant: t}
limits: {header_field: 5}
failure_budget: {window: 5}
profiles:
  a: {validty_days: 1, challenge: {secert: s}}
  b: {hash: md5, colour: blue}
"""
    assert _problems(tmp_path, text) == [
        "unknown key publik_url (did you mean public_url?)",
        "unknown key ca.nmae (did you mean name?)",
        "unknown key intune.tennant (did you mean tenant?)",
        "unknown key profiles.a.validty_days (did you mean validity_days?)",
        "unknown key profiles.a.challenge.secert (did you mean secret?)",
        "unknown key profiles.b.colour",
        'profiles.b.hash must be sha256, sha384, sha512 (or sha1), not "md5"',
        "unknown key limits.header_field (did you mean header_fields?)",
        "unknown key failure_budget.window (did you mean window_seconds?)",
    ]


def test_ranges_are_checked_beside_other_problems_but_pairs_only_on_sound_sections(tmp_path: Path) -> None:
    text = "profiles: {p: {validity_days: x, max_sans: -1, hash: sha1}}\n"
    assert _problems(tmp_path, text) == [
        'profiles.p.validity_days must be an integer, not "x"',
        "profiles.p.max_sans must be an integer from 0 to 1000, not -1",
    ]
    assert _problems(tmp_path, "profiles: {p: {hash: sha1}}\n") == [
        "profiles.p.hash sha1 needs allow_sha1_signature: true"
    ]


def test_the_ca_names_must_be_distinguished_names(tmp_path: Path) -> None:
    assert _problems(tmp_path, "ca: {subject: '', ra_subject: 'CN=RA', ocsp_subject: nonsense}\n") == [
        "ca.subject must be an RFC 4514 distinguished name (like 'CN=Name,O=Org'), not \"\"",
        "ca.ocsp_subject must be an RFC 4514 distinguished name (like 'CN=Name,O=Org'), not \"nonsense\"",
    ]
