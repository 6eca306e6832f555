"""The few OData query options the emulated Graph device endpoints understand.

``$filter``: ``prop eq 'value'`` terms joined by ``or`` (at most ``MAX_FILTER_TERMS``), over the
properties an endpoint names; values compare case-insensitively (they are GUIDs). ``$select``: a
comma-separated list of the entity's properties (``id`` is always returned). ``$top`` and the
``Prefer: odata.maxpagesize=N`` header set the page size. Anything else an endpoint does not take is
refused with 400, as Graph refuses an unsupported query (the ``code`` depends on the service).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

MAX_FILTER_TERMS = 15
_TERM = re.compile(r"\s*(\w+)\s+eq\s+'((?:[^']|'')*)'\s*", re.IGNORECASE)
_OR = re.compile(r"or\s+", re.IGNORECASE)
_MAX_PAGE_SIZE = re.compile(r"(?:^|[,;\s])odata\.maxpagesize\s*=\s*(\d+)", re.IGNORECASE)


class GraphQueryError(ValueError):
    """A request Graph answers with 400 and this ``code``."""

    def __init__(self, message: str, code: str = "BadRequest", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def parse_filter(text: str | None, properties: Mapping[str, str], *, code: str) -> list[tuple[str, str]] | None:
    """``[(property, lower-cased value), ...]`` of ``a eq 'x' or b eq 'y'``; None without a filter.

    ``properties`` maps each filterable property's lower-cased name to its name.
    """
    if text is None:
        return None
    terms: list[tuple[str, str]] = []
    position = 0
    while True:
        match = _TERM.match(text, position)
        if match is None:
            raise GraphQueryError(f"Unsupported or invalid query filter clause: {text!r}; the emulator takes "
                                  f"{' or '.join(f'{p} eq ...' for p in properties.values())}", code)
        name = properties.get(match.group(1).lower())
        if name is None:
            raise GraphQueryError(f"Unsupported query filter clause specified for property '{match.group(1)}'", code)
        terms.append((name, match.group(2).replace("''", "'").lower()))
        position = match.end()
        if position == len(text):
            break
        joined = _OR.match(text, position)
        if joined is None:
            raise GraphQueryError(f"Unsupported or invalid query filter clause: {text!r}", code)
        position = joined.end()
    if len(terms) > MAX_FILTER_TERMS:
        raise GraphQueryError(f"The filter has {len(terms)} terms; at most {MAX_FILTER_TERMS} are allowed", code)
    return terms


def matches(entity: Mapping[str, Any], terms: list[tuple[str, str]] | None) -> bool:
    return terms is None or any(str(entity.get(name, "")).lower() == value for name, value in terms)


def parse_select(text: str | None, known: Collection[str], type_name: str) -> tuple[str, ...] | None:
    """The properties of ``$select`` (None: all); 400 for a property ``type_name`` does not have."""
    if text is None:
        return None
    wanted = tuple(name.strip() for name in text.split(","))
    by_lower = {name.lower(): name for name in known}
    unknown = [name for name in wanted if name.lower() not in by_lower]
    if unknown:
        raise GraphQueryError(f"Could not find a property named '{unknown[0]}' on type '{type_name}'.")
    return tuple(by_lower[name.lower()] for name in wanted)


def selected(entity: Mapping[str, Any], fields: tuple[str, ...] | None) -> dict[str, Any]:
    """``entity`` reduced to ``fields`` and its ``id``."""
    if fields is None:
        return dict(entity)
    return {name: entity[name] for name in ("id", *fields) if name in entity}


def page_size(top: str | None, prefer: str | None, *, default: int, maximum: int) -> int:
    """``$top`` if given, else ``Prefer: odata.maxpagesize``, else ``default``; at most ``maximum``."""
    if top is not None:
        if not top.isdigit() or not 1 <= int(top) <= maximum:
            raise GraphQueryError(f"Invalid page size specified: '{top}'. Must be between 1 and {maximum}.")
        return int(top)
    asked = _MAX_PAGE_SIZE.search(prefer or "")
    if asked is not None and int(asked.group(1)) >= 1:
        return min(int(asked.group(1)), maximum)
    return min(default, maximum)
