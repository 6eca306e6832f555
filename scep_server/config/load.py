"""Loading the configuration: a YAML file, ``SCEP_SERVER_*`` and Microsoft's variable names, validation.

Every setting has an embedded default, so ``scep-server serve`` with no file at all runs a server
(SQLite and an auto-created CA under ``./var``); it keeps the CA keys encrypted, so it needs
``SCEP_CA_PASSPHRASE`` unless a config file says ``dev: true`` (config/dev.yaml, ``make run``).
Environment variables named ``SCEP_SERVER_<KEY>`` override the top-level scalar keys
(``SCEP_SERVER_DATA_DIR``, ``SCEP_SERVER_DATABASE_URL``, ``SCEP_SERVER_PUBLIC_URL``, ...), but never ``dev``.
A profile's ``challenge`` section is read by the class its validator registered for its ``type``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import yaml

from scep_server.config.model import (
    CAConfig,
    ChallengeConfig,
    FailureBudgetConfig,
    IntuneConfig,
    KeyType,
    LimitsConfig,
    ProfileConfig,
    SecretSource,
    ServerConfig,
)
from scep_server.config.parsing import parse_section, reject_unknown, string_list
from scep_server.config.sections import registered_types, section_class
from scep_server.errors import ConfigError
from scep_server.pki.sans import SAN_TYPES
from scep_server.pki.usages import EKU_NAMES, KEY_USAGE_NAMES

__all__ = ["DEPRECATED_CHALLENGE_KEYS", "INTUNE_ENV_NAMES", "PROFILE_NAME", "load_config"]

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
_DOTTED_OID = re.compile(r"^\d+(\.\d+)+$")


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> ServerConfig:
    """Load the YAML file at ``path`` (or none: defaults) and apply ``SCEP_SERVER_*`` overrides."""
    env = os.environ if env is None else env
    raw = _read(path) if path is not None else {}
    config = _build_server(raw)
    config = replace(config, intune=_apply_intune_env(config.intune, env))
    config = _apply_env(config, env)
    _validate_intune(config)
    return config


def _read(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping")
    return loaded or {}


def _apply_env(config: ServerConfig, env: Mapping[str, str]) -> ServerConfig:
    overrides: dict[str, Any] = {}
    for f in fields(ServerConfig):
        value = env.get(f"SCEP_SERVER_{f.name.upper()}")
        if value is None or f.name in (*_SECTIONS, "admin_token", "dev"):
            continue
        try:
            overrides[f.name] = int(value) if f.type in ("int", int) else value
        except ValueError:
            raise ConfigError(f"SCEP_SERVER_{f.name.upper()} must be an integer") from None
    if not overrides:
        return config
    config = replace(config, **overrides)
    _validate_server(config)
    return config


def _build_server(raw: Mapping[str, Any]) -> ServerConfig:
    known = {f.name for f in fields(ServerConfig)}
    reject_unknown(raw, known, "top level")
    values = {k: v for k, v in raw.items() if k not in _SECTIONS}
    if "admin_token" in values:
        values["admin_token"] = SecretSource.parse(values["admin_token"], "admin_token")
    ca = _build_ca(raw.get("ca") or {})
    profiles = _build_profiles(raw.get("profiles"))
    intune = _build_intune(raw.get("intune") or {})
    limits = _build_limits(raw.get("limits") or {})
    budget = _build_failure_budget(raw.get("failure_budget") or {})
    config = ServerConfig(**values, ca=ca, intune=intune, profiles=profiles, limits=limits, failure_budget=budget)
    _validate_server(config)
    return config


# Each limit's range, and whether it takes fractions.
_LIMIT_RANGES: dict[str, tuple[float, float, bool]] = {
    "request_line_bytes": (1024, 8190, False),  # gunicorn's parser stops at 8190
    "header_fields": (1, 1000, False),
    "header_field_bytes": (1024, 65536, False),
    "header_timeout_seconds": (0.5, 600, True),
    "body_timeout_seconds": (0.5, 600, True),
    "connections_per_worker": (10, 100000, False),
}


def _build_limits(raw: Mapping[str, Any]) -> LimitsConfig:
    reject_unknown(raw, set(_LIMIT_RANGES), "limits")
    for key, value in raw.items():
        low, high, fractional = _LIMIT_RANGES[key]
        kinds = (int, float) if fractional else (int,)
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            kind = "a number" if fractional else "an integer"
            raise ConfigError(f"limits.{key} must be {kind} from {low:g} to {high:g}")
    return LimitsConfig(**raw)


def _build_failure_budget(raw: Mapping[str, Any]) -> FailureBudgetConfig:
    reject_unknown(raw, {f.name for f in fields(FailureBudgetConfig)}, "failure_budget")
    for key, low in (("max_failures", 0), ("window_seconds", 1), ("max_tracked_ips", 1)):
        value = raw.get(key, low)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"failure_budget.{key} must be an integer >= {low}")
    return FailureBudgetConfig(**raw)


def _build_intune(raw: Mapping[str, Any]) -> IntuneConfig:
    reject_unknown(raw, {f.name for f in fields(IntuneConfig)}, "intune")
    values = dict(raw)
    for key in ("client_secret", "client_key_password", "proxy_password"):
        if key in values:
            values[key] = SecretSource.parse(values[key], f"intune.{key}")
    if "allowed_service_hosts" in values:
        values["allowed_service_hosts"] = _host_list(values["allowed_service_hosts"])
    return IntuneConfig(**values)


def _host_list(raw: Any) -> tuple[str, ...]:
    """``intune.allowed_service_hosts``: a non-empty list of bare host names (no scheme, port or path)."""
    if isinstance(raw, str) or not isinstance(raw, list | tuple) or not raw:
        raise ConfigError("intune.allowed_service_hosts must be a non-empty list of host names")
    hosts = tuple(str(host).strip().lower().removeprefix("*.").strip(".") for host in raw)
    for host in hosts:
        if not re.fullmatch(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?", host):
            raise ConfigError(f"intune.allowed_service_hosts: {host!r} is not a host name (no scheme, port or path)")
    return hosts


def _apply_intune_env(intune: IntuneConfig, env: Mapping[str, str]) -> IntuneConfig:
    overrides: dict[str, Any] = {}
    for key, name in INTUNE_ENV_NAMES.items():
        if env.get(name):
            overrides[key] = int(env[name]) if key == "proxy_port" and env[name].isdigit() else env[name]
    return replace(intune, **overrides) if overrides else intune


def _validate_intune(config: ServerConfig) -> None:
    intune = config.intune
    uses_intune = any(section_class(p.challenge.type).needs_intune for p in config.profiles)
    if uses_intune and not intune.configured:
        raise ConfigError("a profile uses the intune challenge: set intune.tenant and intune.client_id "
                          "(or TENANT and AAD_APP_ID)")
    if intune.proxy_port is not None and not 0 <= int(intune.proxy_port) <= 65535:
        raise ConfigError("intune.proxy_port must be 0-65535")
    if intune.proxy_user and not intune.proxy_password.configured:
        raise ConfigError("intune.proxy_user needs intune.proxy_password (or PROXY_PASS)")
    if bool(intune.client_certificate) != bool(intune.client_key):
        raise ConfigError("intune.client_certificate and intune.client_key go together")
    for url in (intune.authority, intune.intune_resource_url, intune.graph_resource_url):
        if not url.startswith("https://"):
            raise ConfigError(f"intune URL {url!r} must use https (MSAL and Intune require TLS)")
    if not 1 <= intune.revocation_batch_size <= 500:
        raise ConfigError("intune.revocation_batch_size must be 1-500")


def _build_ca(raw: Mapping[str, Any]) -> CAConfig:
    reject_unknown(raw, {f.name for f in fields(CAConfig)}, "ca")
    values = dict(raw)
    if "key_passphrase" in values:
        values["key_passphrase"] = SecretSource.parse(values["key_passphrase"], "ca.key_passphrase")
    if "key_type" in values:
        values["key_type"] = _key_type(values["key_type"])
    ca = CAConfig(**values)
    if ca.key_type == KeyType.RSA and not 2048 <= ca.key_size <= 4096:
        raise ConfigError("ca.key_size must be between 2048 and 4096")
    if ca.key_type == KeyType.EC and ca.curve not in ("P-256", "P-384"):
        raise ConfigError("ca.curve must be P-256 or P-384")
    if ca.ocsp_validity_days < 1:
        raise ConfigError("ca.ocsp_validity_days must be >= 1")
    if not isinstance(ca.allow_unencrypted_keys, bool):
        raise ConfigError("ca.allow_unencrypted_keys must be true or false")
    if not 1 <= ca.ocsp_response_validity_minutes <= 10080:
        raise ConfigError("ca.ocsp_response_validity_minutes must be between 1 and 10080")
    return ca


def _key_type(raw: Any) -> KeyType:
    try:
        return KeyType(raw)
    except ValueError:
        raise ConfigError("ca.key_type must be 'rsa' or 'ec'") from None


def _build_profiles(raw: Any) -> tuple[ProfileConfig, ...]:
    if raw is None:
        return (ProfileConfig(),)
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("profiles must be a non-empty mapping of name -> settings")
    return tuple(_build_profile(str(name), body or {}) for name, body in raw.items())


def _build_profile(name: str, raw: Mapping[str, Any]) -> ProfileConfig:
    where = f"profiles.{name}"
    if not PROFILE_NAME.match(name):
        raise ConfigError(f"{where}: profile names are letters, digits, '_', '.', '-'")
    reject_unknown(raw, {f.name for f in fields(ProfileConfig)} - {"name"}, where)
    values: dict[str, Any] = dict(raw)
    values["challenge"] = _challenge(raw.get("challenge") or {}, f"{where}.challenge")
    for key in ("allowed_key_types", "allowed_curves", "key_usage", "extended_key_usage"):
        if values.get(key) is not None:
            values[key] = tuple(str(v) for v in values[key])
    for key in ("allowed_extended_key_usages", "allowed_san_types"):
        if key in values:
            values[key] = string_list(values[key], f"{where}.{key}")
    profile = ProfileConfig(name=name, **values)
    _validate_profile(profile, where)
    return profile


def _challenge(raw: Any, where: str) -> ChallengeConfig:
    """The section of the validator ``type`` names (default ``static``), parsed by the class it registered."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    values = _renamed(raw, where)
    kind = str(values.pop("type", ChallengeConfig().type))
    if kind not in registered_types():
        raise ConfigError(f"{where}.type must be one of {', '.join(registered_types())}, not {kind!r}")
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


def _validate_profile(profile: ProfileConfig, where: str) -> None:
    if profile.hash not in ("sha256", "sha384", "sha512", "sha1"):
        raise ConfigError(f"{where}.hash must be sha256, sha384, sha512 (or sha1)")
    if profile.hash == "sha1" and not profile.allow_sha1_signature:
        raise ConfigError(f"{where}.hash sha1 needs allow_sha1_signature: true")
    if profile.validity_days < 1:
        raise ConfigError(f"{where}.validity_days must be >= 1")
    if profile.min_rsa_bits < 1024:
        raise ConfigError(f"{where}.min_rsa_bits must be >= 1024")
    if profile.min_rsa_bits > profile.max_rsa_bits:
        raise ConfigError(f"{where}.min_rsa_bits must not exceed max_rsa_bits ({profile.max_rsa_bits})")
    if not set(profile.allowed_key_types) <= {"rsa", "ec"}:
        raise ConfigError(f"{where}.allowed_key_types takes rsa and/or ec")
    for usage in profile.key_usage or ():
        if usage not in KEY_USAGE_NAMES:
            raise ConfigError(f"{where}.key_usage: unknown usage {usage!r}")
    for eku in profile.extended_key_usage or ():
        if eku not in EKU_NAMES and not _DOTTED_OID.match(eku):
            raise ConfigError(f"{where}.extended_key_usage: unknown EKU {eku!r} (a name or dotted OID)")
    if profile.get_cert not in ("own", "any"):
        raise ConfigError(f"{where}.get_cert must be 'own' or 'any'")
    cap = profile.max_concurrent_operations
    if isinstance(cap, bool) or not isinstance(cap, int) or not 0 <= cap <= 100000:
        raise ConfigError(f"{where}.max_concurrent_operations must be an integer from 0 (no cap) to 100000")
    _validate_name_policy(profile, where)


def _validate_name_policy(profile: ProfileConfig, where: str) -> None:
    """The allow-lists and limits on what a CSR may ask for (EKUs, subjectAltNames, name lengths)."""
    for eku in profile.allowed_extended_key_usages:
        if eku not in EKU_NAMES and not _DOTTED_OID.match(eku):
            raise ConfigError(f"{where}.allowed_extended_key_usages: unknown EKU {eku!r} (a name or dotted OID)")
    if not set(profile.allowed_san_types) <= set(SAN_TYPES):
        raise ConfigError(f"{where}.allowed_san_types takes {', '.join(SAN_TYPES)}")
    for key, low, high in (("max_sans", 0, 1000), ("max_subject_length", 1, 65536), ("max_san_length", 1, 65536)):
        value = getattr(profile, key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"{where}.{key} must be an integer from {low} to {high}")
    if not isinstance(profile.allow_sid_extension, bool):
        raise ConfigError(f"{where}.allow_sid_extension must be true or false")


def _validate_server(config: ServerConfig) -> None:
    if not isinstance(config.dev, bool):
        raise ConfigError("dev must be true or false")
    if not 0 <= config.trusted_proxy_hops <= 5:
        raise ConfigError("trusted_proxy_hops must be between 0 and 5")
    if not 1 <= config.transaction_lease_seconds <= 86400:
        raise ConfigError("transaction_lease_seconds must be between 1 and 86400")
    if config.max_body_bytes < 1024:
        raise ConfigError("max_body_bytes must be >= 1024")
    if config.public_url and not re.match(r"^https?://", config.public_url):
        raise ConfigError("public_url must start with http:// or https://")
    if config.log_format not in ("text", "json"):
        raise ConfigError(f"log_format must be text or json, not {config.log_format!r}")
