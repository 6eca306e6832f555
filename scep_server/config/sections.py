"""The challenge sections of profiles, keyed by their ``type``: each validator registers the class of its own.

The validators live above the configuration (``scep_server.challenge``), so nothing here imports them:
the first lookup loads that package by name and its validators register their sections as they are
defined, the way plugins named by entry points would.
"""

from __future__ import annotations

import importlib

from scep_server.config.model import ChallengeConfig
from scep_server.errors import ConfigError

__all__ = ["VALIDATORS_PACKAGE", "register_section", "registered_types", "section_class"]

VALIDATORS_PACKAGE = "scep_server.challenge"
_SECTIONS: dict[str, type[ChallengeConfig]] = {}


def register_section(type_name: str, cls: type[ChallengeConfig]) -> None:
    """Make ``cls`` the section of ``challenge.type: type_name`` (once per name)."""
    if not issubclass(cls, ChallengeConfig):
        raise TypeError(f"{cls!r} does not extend ChallengeConfig")
    registered = _SECTIONS.get(type_name)
    if registered is not None and registered is not cls:
        raise ValueError(f"challenge type {type_name!r} is registered already ({registered.__qualname__})")
    _SECTIONS[type_name] = cls


def registered_types() -> tuple[str, ...]:
    """Every ``challenge.type`` a profile may name, sorted."""
    _load_validators()
    return tuple(sorted(_SECTIONS))


def section_class(type_name: str) -> type[ChallengeConfig]:
    """The section class registered for ``type_name``; ConfigError listing the registered types otherwise."""
    _load_validators()
    try:
        return _SECTIONS[type_name]
    except KeyError:
        raise ConfigError(
            f"unknown challenge type {type_name!r}; the registered types are {', '.join(sorted(_SECTIONS))}"
        ) from None


def _load_validators() -> None:
    importlib.import_module(VALIDATORS_PACKAGE)  # a no-op once imported
