"""The field parsers and the generic section reader every configuration section is built with."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import pytest

from scep_server.config import SecretSource
from scep_server.config.parsing import enum_value, integer, parse_section, parser, reject_unknown, string_list
from scep_server.errors import ConfigError


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True, slots=True)
class Section:
    kind: str = "plain"
    count: int = field(default=1, metadata=parser(integer(1, 9)))
    colour: Colour = field(default=Colour.RED, metadata=parser(enum_value(Colour)))
    secret: SecretSource = field(default_factory=SecretSource, metadata=parser(SecretSource.parse))
    names: tuple[str, ...] = field(default=(), metadata=parser(string_list))

    def check(self, where: str) -> None:
        if self.count == 7 and self.colour is Colour.BLUE:
            raise ConfigError(f"{where}: no blue sevens")


def test_absent_keys_keep_their_defaults() -> None:
    assert parse_section(Section, {}, "s") == Section()


def test_values_are_parsed_by_their_fields_parser() -> None:
    section = parse_section(Section, {"count": 3, "colour": "blue", "secret": {"env": "X"}, "names": ["a", "2"]}, "s")
    assert section == Section(count=3, colour=Colour.BLUE, secret=SecretSource(env="X"), names=("a", "2"))
    assert section.colour is Colour.BLUE


def test_fixed_values_are_not_keys() -> None:
    assert parse_section(Section, {"count": 2}, "s", kind="fixed") == Section(kind="fixed", count=2)
    with pytest.raises(ConfigError, match=r"^unknown key s.kind$"):
        parse_section(Section, {"kind": "mine"}, "s", kind="fixed")


@pytest.mark.parametrize(("raw", "message"), [
    ({"count": 0}, "s.count must be an integer from 1 to 9"),
    ({"count": "many"}, "s.count must be an integer from 1 to 9"),
    ({"colour": "green"}, "s.colour must be 'red' or 'blue'"),
    ({"secret": 5}, "s.secret must be a string or a mapping with env/file/value"),
    ({"secret": {"vault": "x"}}, r"unknown key s.secret.vault \(did you mean value\?\)"),
    ({"names": "a"}, "s.names must be a list"),
    ({"count": 7, "colour": "blue"}, "s: no blue sevens"),
    ({"size": 1, "weight": 2}, r"^unknown key s.size\nunknown key s.weight$"),
])
def test_errors_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_section(Section, raw, "s")


def test_integer_without_upper_bound() -> None:
    assert integer(1)(10**6, "k") == 10**6
    with pytest.raises(ConfigError, match="k must be an integer >= 1"):
        integer(1)(0, "k")


def test_secret_forms() -> None:
    assert SecretSource.parse(None, "k") == SecretSource()
    assert SecretSource.parse("inline", "k") == SecretSource(value="inline")
    assert SecretSource.parse({"file": "/run/s", "env": "E"}, "k") == SecretSource(env="E", file="/run/s")


def test_reject_unknown_passes_known_keys() -> None:
    reject_unknown({"a": 1}, {"a", "b"}, "s")


def test_string_list_of_null_is_empty() -> None:
    assert string_list(None, "k") == ()


def test_only_dataclasses_are_sections() -> None:
    with pytest.raises(TypeError):
        parse_section(dict, {}, "s")
