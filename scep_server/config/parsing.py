"""Turning YAML values into settings: the parsers every section uses, and the one that reads a section.

A section is a frozen dataclass; :func:`parse_section` takes its keys from the dataclass fields and
checks each value against the field's type (``int``, ``float``, ``bool``, ``str``, ``tuple[str, ...]``,
an optional one, a ``StrEnum``, a :class:`~scep_server.config.model.SecretSource`, a nested section), or
converts it with the parser named in the field's metadata (``field(metadata=parser(...))``), so a
validator's section (``scep_server.challenge``) declares its settings and nothing else.

Every error is a :class:`~scep_server.errors.ConfigError` with one line per problem, each naming the key
(``profiles.corp.challenge.secret``), the value and what is allowed. :class:`Problems` collects them, so
that a configuration's every mistake is reported at once.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from enum import StrEnum
from typing import Any, TypeVar

from scep_server.errors import ConfigError, ScepServerError
from scep_server.pki.names import printable

__all__ = [
    "Parser",
    "Problems",
    "enum_value",
    "from_text",
    "integer",
    "key_path",
    "mapping",
    "parse_section",
    "parser",
    "reject_unknown",
    "report_unknown",
    "shown",
    "string_list",
    "typed_value",
]

Parser = Callable[[Any, str], Any]  # (YAML value, where) -> setting
_Section = TypeVar("_Section")
_Enum = TypeVar("_Enum", bound=StrEnum)
_T = TypeVar("_T")
PARSER_KEY = "parse"
SHOWN_CHARS = 80
_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})


class Problems:
    """The problems found so far, one line each (a ConfigError may carry several, one per line)."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(self._lines)

    def add(self, error: ScepServerError | str) -> None:
        self._lines.extend(str(error).splitlines() or ["invalid configuration"])

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """Record a ConfigError raised in the block instead of letting it end the reading."""
        try:
            yield
        except ConfigError as exc:
            self.add(exc)

    def attempt(self, parse: Callable[[], _T]) -> _T | None:
        """``parse()``, or None once its ConfigError is recorded."""
        try:
            return parse()
        except ConfigError as exc:
            self.add(exc)
            return None

    def raise_if_any(self) -> None:
        if self._lines:
            raise ConfigError("\n".join(self._lines))


def parser(parse: Parser) -> dict[str, Parser]:
    """Field metadata naming how a key's value is parsed: ``field(default=..., metadata=parser(integer(1)))``."""
    return {PARSER_KEY: parse}


def key_path(where: str, key: object) -> str:
    """The dotted name of ``key`` in the section ``where`` (the top level is ``""``)."""
    return f"{where}.{key}" if where else str(key)


def shown(value: Any) -> str:
    """A YAML value as messages show it: as YAML-like JSON on one line, clipped, control characters escaped."""
    text = printable(json.dumps(value, ensure_ascii=False, default=str))
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def parse_section(
    cls: type[_Section],
    raw: Mapping[str, Any],
    where: str,
    *,
    problems: Problems | None = None,
    parsers: Mapping[str, Parser] | None = None,
    labels: Mapping[str, str] | None = None,
    **fixed: Any,
) -> _Section:
    """An instance of the dataclass ``cls`` from the mapping ``raw`` (absent keys keep their defaults).

    Keys that are not fields, or that ``fixed`` supplies, are refused. A value is parsed by the parser
    ``parsers`` names for its field, else by its field's metadata parser, else checked against the field's
    type. ``labels`` names keys whose value came from elsewhere (an environment variable). Problems go to
    ``problems`` (a value in error keeps its default) or, without it, are raised together.
    ``cls.check(where)`` runs afterwards when the class has one and its values were all acceptable.
    """
    if not is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    found = Problems() if problems is None else problems
    before = len(found)
    report_unknown(raw, [f.name for f in fields(cls) if f.name not in fixed], where, found)
    hints = field_types(cls)
    values = dict(fixed)
    for f in fields(cls):
        if f.name not in raw or f.name in fixed:
            continue
        label = (labels or {}).get(f.name) or key_path(where, f.name)
        parse: Parser | None = (parsers or {}).get(f.name) or f.metadata.get(PARSER_KEY)
        with found.collecting():
            if parse is not None:
                values[f.name] = parse(raw[f.name], label)
            else:
                values[f.name] = typed_value(hints.get(f.name, Any), raw[f.name], label, found)
    section = cls(**values)
    check: Callable[[str], None] | None = getattr(section, "check", None)
    if check is not None and len(found) == before:
        with found.collecting():
            check(where)
    if problems is None:
        found.raise_if_any()
    return section


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of the dataclass ``cls`` (those that cannot be resolved are taken as Any)."""
    try:
        return typing.get_type_hints(cls)
    except NameError:  # a class defined where its annotations' names are not visible: no checks
        return {}


def typed_value(hint: Any, raw: Any, where: str, problems: Problems | None = None) -> Any:
    """``raw`` as a value of the type ``hint``; ConfigError naming ``where``, ``raw`` and what is allowed."""
    optional, hint = _unwrap_optional(hint)
    if raw is None and optional:
        return None
    if hint is Any:
        return raw
    own_parser: Parser | None = getattr(hint, "parse", None)  # SecretSource reads its own forms
    if own_parser is not None:
        return own_parser(raw, where)
    if is_dataclass(hint) and isinstance(hint, type):
        if raw is None:
            return hint()
        return parse_section(hint, mapping(raw, where), where, problems=problems)
    if isinstance(hint, type) and issubclass(hint, StrEnum):
        return enum_value(hint)(raw, where)
    if typing.get_origin(hint) is tuple:
        return _strings(raw, where)
    return _scalar(hint, raw, where, optional)


def _unwrap_optional(hint: Any) -> tuple[bool, Any]:
    """Whether ``hint`` admits None, and the type it is otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        others = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(others) == 1:
            return len(others) < len(typing.get_args(hint)), others[0]
    return False, hint


_SCALARS: dict[type, tuple[tuple[type, ...], str]] = {
    bool: ((bool,), "true or false"),
    int: ((int,), "an integer"),
    float: ((int, float), "a number"),
    str: ((str,), "a string"),
}


def _scalar(hint: Any, raw: Any, where: str, optional: bool) -> Any:
    if hint not in _SCALARS:
        return raw  # a type the sections do not use: as it is
    kinds, allowed = _SCALARS[hint]
    if (isinstance(raw, bool) and hint is not bool) or not isinstance(raw, kinds):
        hint_text = " (quote it)" if hint is str and isinstance(raw, int | float) else ""
        raise ConfigError(f"{where} must be {allowed}{' or null' if optional else ''}{hint_text}, not {shown(raw)}")
    return float(typing.cast(float, raw)) if hint is float else raw


def mapping(raw: Any, where: str) -> Mapping[str, Any]:
    """A section's YAML value: a mapping, or null (every default)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping of settings, not {shown(raw)}")
    return raw


def report_unknown(raw: Mapping[Any, Any], known: Iterable[str], where: str, problems: Problems) -> None:
    """One problem per key of ``raw`` that is not in ``known``, with the known key it most resembles."""
    names = list(known)
    for key in raw:
        if key in names:
            continue
        close = difflib.get_close_matches(str(key), names, n=1)
        suggestion = f" (did you mean {close[0]}?)" if close else ""
        problems.add(f"unknown key {printable(key_path(where, key))}{suggestion}")


def reject_unknown(raw: Mapping[Any, Any], known: set[str], where: str) -> None:
    found = Problems()
    report_unknown(raw, sorted(known), where, found)
    found.raise_if_any()


def _strings(raw: Any, where: str) -> tuple[str, ...]:
    """A YAML list of strings (null: none)."""
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise ConfigError(f"{where} must be a list of strings, not {shown(raw)}")
    for index, item in enumerate(raw):
        if not isinstance(item, str):
            raise ConfigError(f"{where}[{index}] must be a string (quote it), not {shown(item)}")
    return tuple(raw)


def string_list(raw: Any, where: str) -> tuple[str, ...]:
    """A YAML list of names (null: none)."""
    return _strings(raw, where)


def integer(low: int, high: int | None = None) -> Parser:
    """A parser of whole numbers from ``low`` to ``high`` (None: no upper bound); true and false are not numbers."""

    def parse(raw: Any, where: str) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < low or (high is not None and raw > high):
            bounds = f">= {low}" if high is None else f"from {low} to {high}"
            raise ConfigError(f"{where} must be an integer {bounds}, not {shown(raw)}")
        return raw

    return parse


def enum_value(kind: type[_Enum]) -> Callable[[Any, str], _Enum]:
    """A parser of one of the values of the StrEnum ``kind``."""

    def parse(raw: Any, where: str) -> _Enum:
        if isinstance(raw, str) and raw in kind._value2member_map_:
            return kind(raw)
        names = " or ".join(f"'{member.value}'" for member in kind)
        raise ConfigError(f"{where} must be {names}, not {shown(raw)}")

    return parse


def from_text(hint: Any, text: str, where: str) -> Any:
    """The value of an environment variable ``where`` for a setting of the type ``hint``, from its text."""
    _, hint = _unwrap_optional(hint)
    if hint is bool:
        word = text.strip().lower()
        if word in _TRUE_WORDS | _FALSE_WORDS:
            return word in _TRUE_WORDS
        raise ConfigError(f"{where} must be true or false, not {shown(text)}")
    if hint in (int, float):
        try:
            return int(text.strip()) if hint is int else float(text.strip())
        except ValueError:
            allowed = "an integer" if hint is int else "a number"
            raise ConfigError(f"{where} must be {allowed}, not {shown(text)}") from None
    return text
