"""Turning YAML values into settings: the parsers every section uses, and the one that reads a section.

A section is a frozen dataclass; :func:`parse_section` takes its keys from the dataclass fields and
converts each value with the parser named in the field's metadata (``field(metadata=parser(...))``), so a
validator's section (``scep_server.challenge``) declares its settings and nothing else. Every error is a
:class:`~scep_server.errors.ConfigError` naming the key (``profiles.corp.challenge.secret``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from enum import StrEnum
from typing import Any, TypeVar

from scep_server.errors import ConfigError

__all__ = [
    "Parser",
    "enum_value",
    "integer",
    "parse_section",
    "parser",
    "reject_unknown",
    "string_list",
]

Parser = Callable[[Any, str], Any]  # (YAML value, where) -> setting
_Section = TypeVar("_Section")
_Enum = TypeVar("_Enum", bound=StrEnum)
PARSER_KEY = "parse"


def parser(parse: Parser) -> dict[str, Parser]:
    """Field metadata naming how a key's value is parsed: ``field(default=..., metadata=parser(integer(1)))``."""
    return {PARSER_KEY: parse}


def parse_section(cls: type[_Section], raw: Mapping[str, Any], where: str, **fixed: Any) -> _Section:
    """An instance of the dataclass ``cls`` from the mapping ``raw`` (absent keys keep their defaults).

    Keys that are not fields, or that ``fixed`` supplies, are refused; a value is parsed by its field's
    parser, else taken as it is. ``cls.check(where)`` runs afterwards when the class has one.
    """
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    known = {f.name for f in fields(cls)} - set(fixed)
    reject_unknown(raw, known, where)
    values = dict(fixed)
    for f in fields(cls):
        if f.name in raw and f.name not in fixed:
            parse: Parser | None = f.metadata.get(PARSER_KEY)
            values[f.name] = parse(raw[f.name], f"{where}.{f.name}") if parse else raw[f.name]
    section = cls(**values)
    check: Callable[[str], None] | None = getattr(section, "check", None)
    if check is not None:
        check(where)
    return section


def reject_unknown(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)}")


def string_list(raw: Any, where: str) -> tuple[str, ...]:
    """A YAML list of names (null: none)."""
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise ConfigError(f"{where} must be a list")
    return tuple(str(item) for item in raw)


def integer(low: int, high: int | None = None) -> Parser:
    """A parser of whole numbers (as ``int()`` reads them) from ``low`` to ``high`` (None: no upper bound)."""

    def parse(raw: Any, where: str) -> int:
        try:
            value: int | None = int(raw)
        except (TypeError, ValueError):
            value = None
        if value is None or value < low or (high is not None and value > high):
            bounds = f">= {low}" if high is None else f"from {low} to {high}"
            raise ConfigError(f"{where} must be an integer {bounds}")
        return value

    return parse


def enum_value(kind: type[_Enum]) -> Callable[[Any, str], _Enum]:
    """A parser of one of the values of the StrEnum ``kind``."""

    def parse(raw: Any, where: str) -> _Enum:
        try:
            return kind(str(raw))
        except ValueError:
            names = " or ".join(f"'{member.value}'" for member in kind)
            raise ConfigError(f"{where} must be {names}") from None

    return parse
