"""Loading the configuration: a YAML file, ``SCEP_SERVER_*`` and Microsoft's variable names, validation.

Every setting has an embedded default, so ``scep-server serve`` with no file at all runs a server
(SQLite and an auto-created CA under ``./var``); it keeps the CA keys encrypted, so it needs
``SCEP_CA_PASSPHRASE`` unless a config file says ``dev: true`` (config/dev.yaml, ``make run``).
Environment variables named ``SCEP_SERVER_<KEY>`` override the top-level scalar keys
(``SCEP_SERVER_DATA_DIR``, ``SCEP_SERVER_DATABASE_URL``, ``SCEP_SERVER_LOG_LEVEL``,
``SCEP_SERVER_LOG_FORMAT``, ...), but never ``dev``; Microsoft's names (``TENANT``, ``AAD_APP_ID``, ...)
override the ``intune`` keys; an empty variable is an unset one. A profile's ``challenge`` section is
read by the class its validator registered for its ``type``.

Every value is checked against its field's type, then against its range and the rules of its section
(:mod:`.checks`). :func:`load_config` reports every problem at once: a ConfigError with one line each.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from scep_server.config.checks import check_section, log_level
from scep_server.config.model import (
    CAConfig,
    ChallengeConfig,
    DeviceLifecycle,
    FailureBudgetConfig,
    IntuneConfig,
    LimitsConfig,
    ProfileConfig,
    ServerConfig,
)
from scep_server.config.parsing import (
    Parser,
    Problems,
    field_types,
    from_text,
    mapping,
    parse_section,
    shown,
)
from scep_server.config.sections import registered_types, section_class
from scep_server.errors import ConfigError
from scep_server.pki.names import printable

__all__ = ["DEPRECATED_CHALLENGE_KEYS", "INTUNE_ENV_NAMES", "PROFILE_NAME", "SERVER_ENV_NAMES", "load_config"]

log = logging.getLogger("scep_server.config")

PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
INTUNE_ENV_NAMES = {
    # Microsoft's names (as in its CsrValidation libraries) accepted as environment variables.
    "client_id": "AAD_APP_ID",
    "tenant": "TENANT",
    "provider_name_and_version": "PROVIDER_NAME_AND_VERSION",
    "authority": "AUTH_AUTHORITY",
    "intune_resource_url": "INTUNE_RESOURCE_URL",
    "graph_resource_url": "MS_GRAPH_RESOURCE_URL",
    "graph_api_version": "MS_GRAPH_API_VERSION",
    "intune_app_id": "INTUNE_APP_ID",
    "proxy_host": "PROXY_HOST",
    "proxy_port": "PROXY_PORT",
    "proxy_user": "PROXY_USER",
}
# Old challenge keys still read, with a warning, under their new names.
DEPRECATED_CHALLENGE_KEYS = {"on_intune_unavailable": "on_validator_unavailable"}
_SECTIONS = ("ca", "profiles", "intune", "limits", "failure_budget")
# The top-level scalar keys the environment may set (a secret source and ``dev`` only in the file).
SERVER_ENV_NAMES = {
    f.name: f"SCEP_SERVER_{f.name.upper()}"
    for f in fields(ServerConfig)
    if f.name not in (*_SECTIONS, "admin_token", "dev")
}


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> ServerConfig:
    """Load the YAML file at ``path`` (or none: defaults) and apply the environment's overrides.

    Raises ConfigError naming every problem, one per line.
    """
    env = os.environ if env is None else env
    top = dict(_read(path)) if path is not None else {}
    problems = Problems()
    labels = _overlay_env(ServerConfig, top, SERVER_ENV_NAMES, env, problems)
    if "intune" not in top and any(env.get(name) for name in INTUNE_ENV_NAMES.values()):
        top["intune"] = None  # the environment alone configures it
    parsers: dict[str, Parser] = {
        "ca": _section_parser(CAConfig),
        "intune": _intune_parser(env),
        "limits": _section_parser(LimitsConfig),
        "failure_budget": _section_parser(FailureBudgetConfig),
        "profiles": _build_profiles,
        "log_level": log_level,
    }
    config = parse_section(ServerConfig, top, "", problems=problems, parsers=parsers, labels=labels)
    check_section(config, "", problems, labels)
    if not problems:
        _check_intune_is_configured(config, problems)
    problems.raise_if_any()
    return config


def _read(path: str | os.PathLike[str]) -> Mapping[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not {shown(loaded)}")
    return loaded


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint on one line, with where it is."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return printable(f"{exc.problem} at line {mark.line + 1}, column {mark.column + 1}")
    lines = str(exc).strip().splitlines()
    return printable(lines[0] if lines else type(exc).__name__)


def _overlay_env(
    cls: type, values: dict[str, Any], names: Mapping[str, str], env: Mapping[str, str], problems: Problems
) -> dict[str, str]:
    """Put the value of each variable of ``names`` (key -> variable) into ``values`` as the key's type
    reads it from text; the keys set, each labelled with its variable. An empty variable is an unset one."""
    hints = field_types(cls)
    labels: dict[str, str] = {}
    for key, name in names.items():
        text = env.get(name)
        if not text:
            continue
        labels[key] = name
        try:
            values[key] = from_text(hints[key], text, name)
        except ConfigError as exc:
            problems.add(exc)
            values.pop(key, None)
    return labels


def _section_parser(cls: type, parsers: Mapping[str, Parser] | None = None) -> Parser:
    """The parser of a section of the kind ``cls``: its keys, their types, ranges and rules."""

    def parse(raw: Any, where: str) -> Any:
        problems = Problems()
        section: Any = parse_section(cls, mapping(raw, where), where, problems=problems, parsers=parsers)
        check_section(section, where, problems, pairs=not problems)
        problems.raise_if_any()
        return section

    return parse


def _intune_parser(env: Mapping[str, str]) -> Parser:
    """The ``intune`` section, with the values of Microsoft's variables (``INTUNE_ENV_NAMES``) over the file's."""

    def parse(raw: Any, where: str) -> IntuneConfig:
        problems = Problems()
        values = dict(mapping(raw, where))
        labels = _overlay_env(IntuneConfig, values, INTUNE_ENV_NAMES, env, problems)
        intune = parse_section(IntuneConfig, values, where, problems=problems, labels=labels,
                               parsers={"allowed_service_hosts": _host_list})
        check_section(intune, where, problems, labels, pairs=not problems)
        problems.raise_if_any()
        return intune

    return parse


def _host_list(raw: Any, where: str) -> tuple[str, ...]:
    """``intune.allowed_service_hosts``: a non-empty list of bare host names (no scheme, port or path)."""
    if isinstance(raw, str) or not isinstance(raw, list | tuple) or not raw:
        raise ConfigError(f"{where} must be a non-empty list of host names, not {shown(raw)}")
    hosts = tuple(str(host).strip().lower().removeprefix("*.").strip(".") for host in raw)
    for host in hosts:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", host):
            raise ConfigError(f"{where}: {shown(host)} is not a host name (no scheme, port or path)")
    return hosts


def _check_intune_is_configured(config: ServerConfig, problems: Problems) -> None:
    users = [p.name for p in config.profiles if section_class(p.challenge.type).needs_intune]
    if users and not config.intune.configured:
        problems.add(f"a profile uses the intune challenge ({', '.join(users)}): set intune.tenant and "
                     "intune.client_id (or TENANT and AAD_APP_ID)")
    synced = [p.name for p in config.profiles if p.device_lifecycle is not DeviceLifecycle.OFF]
    if synced and not config.intune.configured:
        problems.add(f"a profile turns the device lifecycle sync on ({', '.join(synced)}): it asks Microsoft "
                     "Graph, so set intune.tenant and intune.client_id (or TENANT and AAD_APP_ID)")


def _build_profiles(raw: Any, where: str) -> tuple[ProfileConfig, ...]:
    if raw is None:
        return (ProfileConfig(),)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where} must be a non-empty mapping of profile names to settings, not {shown(raw)}")
    problems = Problems()
    profiles = tuple(_build_profile(str(name), body, problems) for name, body in raw.items())
    problems.raise_if_any()
    return profiles


def _build_profile(name: str, body: Any, problems: Problems) -> ProfileConfig:
    where = printable(f"profiles.{name}")
    before = len(problems)
    if not PROFILE_NAME.match(name):
        problems.add(f"{where}: profile names are letters, digits, '_', '.', '-' (up to 64, the first a letter "
                     f"or digit), not {shown(name)}")
    raw = problems.attempt(lambda: mapping(body, where))
    if raw is None:
        return ProfileConfig(name=name)
    # Always read, so that a profile without one has its validator's section (static).
    values = {"challenge": None, **raw}
    profile = parse_section(ProfileConfig, values, where, problems=problems, parsers={"challenge": _challenge},
                            name=name)
    check_section(profile, where, problems, pairs=len(problems) == before)
    return profile


def _challenge(raw: Any, where: str) -> ChallengeConfig:
    """The section of the validator ``type`` names (default ``static``), parsed by the class it registered."""
    values = _renamed(mapping(raw, where), where)
    kind = values.pop("type", ChallengeConfig().type)
    if not isinstance(kind, str) or kind not in registered_types():
        raise ConfigError(f"{where}.type must be one of {', '.join(registered_types())}, not {shown(kind)}")
    return parse_section(section_class(kind), values, where, type=kind)


def _renamed(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``raw`` with deprecated keys under their new names (both spellings at once: an error)."""
    values = dict(raw)
    for old, new in DEPRECATED_CHALLENGE_KEYS.items():
        if old not in values:
            continue
        if new in values:
            raise ConfigError(f"{where}: {old} is the old name of {new}; set only {new}")
        log.warning("%s.%s is deprecated: call it %s", where, old, new)
        values[new] = values.pop(old)
    return values
