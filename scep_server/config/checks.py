"""What a section must satisfy beyond its types: the range of each bounded setting, and how settings go together.

:func:`check_section` runs both on a section :func:`~scep_server.config.parsing.parse_section` built and
records one line per problem, naming the key, its value and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from scep_server.config.model import (
    CAConfig,
    FailureBudgetConfig,
    IntuneConfig,
    KeyType,
    LimitsConfig,
    ProfileConfig,
    ServerConfig,
)
from scep_server.config.parsing import Problems, field_types, key_path, shown
from scep_server.errors import ConfigError
from scep_server.pki.names import parse_name
from scep_server.pki.sans import SAN_TYPES
from scep_server.pki.usages import EKU_NAMES, KEY_USAGE_NAMES

__all__ = ["LOG_LEVELS", "RANGES", "check_section", "log_level"]

Label = Callable[[str], str]  # a key of the section -> how messages name it
Rules = Callable[[Any, Label], Iterator[str]]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HASHES = ("sha256", "sha384", "sha512", "sha1")
_DOTTED_OID = re.compile(r"^\d+(\.\d+)+$")

# (lowest, highest) of each bounded setting; None: no upper bound.
RANGES: dict[type, dict[str, tuple[float, float | None]]] = {
    ServerConfig: {
        "max_body_bytes": (1024, None), "trusted_proxy_hops": (0, 5), "transaction_lease_seconds": (1, 86400),
    },
    CAConfig: {
        "validity_days": (1, None), "ra_validity_days": (1, None), "crl_validity_hours": (1, None),
        "ra_grace_days": (0, 365), "ra_renew_days": (0, 3650),
        "ocsp_validity_days": (1, None), "ocsp_response_validity_minutes": (1, 10080),
    },
    IntuneConfig: {
        "proxy_port": (1, 65535), "connect_timeout": (0.1, 600), "read_timeout": (0.1, 600), "max_retries": (0, 100),
        "backoff_base": (0, 3600), "backoff_max": (0, 3600), "revocation_poll_seconds": (1, None),
        "revocation_batch_size": (1, 500),
    },
    LimitsConfig: {
        "request_line_bytes": (1024, 8190),  # gunicorn's parser stops at 8190
        "header_fields": (1, 1000),
        "header_field_bytes": (1024, 65536),
        "header_timeout_seconds": (0.5, 600),
        "body_timeout_seconds": (0.5, 600),
        "connections_per_worker": (10, 100000),
    },
    FailureBudgetConfig: {"max_failures": (0, None), "window_seconds": (1, None), "max_tracked_ips": (1, None)},
    ProfileConfig: {
        "validity_days": (1, None), "backdate_minutes": (0, None), "min_rsa_bits": (1024, None),
        "max_sans": (0, 1000), "max_subject_length": (1, 65536), "max_san_length": (1, 65536),
        "max_concurrent_operations": (0, 100000),  # 0: no cap
    },
}


def check_section(
    section: Any, where: str, problems: Problems, labels: Mapping[str, str] | None = None, *, pairs: bool = True
) -> None:
    """Record every value of ``section`` out of its range or refused by its kind's rules and, with ``pairs``,
    every pair of settings that do not go together (without: some value was refused already, and a pair
    would be judged with its default)."""
    def label(key: str) -> str:
        return (labels or {}).get(key) or key_path(where, key)

    kind = type(section)
    hints = field_types(kind)
    for key, (low, high) in RANGES.get(kind, {}).items():
        value = getattr(section, key)
        if value is not None and not (low <= value and (high is None or value <= high)):
            allowed = "an integer" if hints.get(key) in (int, int | None) else "a number"
            bounds = f">= {low:g}" if high is None else f"from {low:g} to {high:g}"
            problems.add(f"{label(key)} must be {allowed} {bounds}, not {shown(value)}")
    rules = (_VALUE_RULES.get(kind), _PAIR_RULES.get(kind) if pairs else None)
    for section_rules in filter(None, rules):
        for problem in section_rules(section, label):
            problems.add(problem)


def log_level(raw: Any, where: str) -> str:
    """A logging level name, in any case; its upper-case name."""
    if isinstance(raw, str) and raw.upper() in LOG_LEVELS:
        return raw.upper()
    raise ConfigError(f"{where} must be one of {', '.join(LOG_LEVELS)} (in any case), not {shown(raw)}")


def _server_values(config: ServerConfig, label: Label) -> Iterator[str]:
    if config.public_url and not re.match(r"^https?://[^/]", config.public_url):
        yield f"{label('public_url')} must be an http:// or https:// URL, not {shown(config.public_url)}"
    if config.log_format not in ("text", "json"):
        yield f"{label('log_format')} must be text or json, not {shown(config.log_format)}"
    if not config.data_dir:
        yield f"{label('data_dir')} must name a directory, not {shown(config.data_dir)}"
    yield from _nul_in_paths(config, ("data_dir",), label)


def _ca_values(ca: CAConfig, label: Label) -> Iterator[str]:
    for key in ("subject", "ra_subject", "ocsp_subject"):
        yield from _distinguished_name(getattr(ca, key), label(key))


def _ca_pairs(ca: CAConfig, label: Label) -> Iterator[str]:
    if ca.key_type == KeyType.RSA and not 2048 <= ca.key_size <= 4096:
        yield f"{label('key_size')} must be an integer from 2048 to 4096 (RSA bits), not {shown(ca.key_size)}"
    if ca.key_type == KeyType.EC and ca.curve not in ("P-256", "P-384"):
        yield f"{label('curve')} must be P-256 or P-384, not {shown(ca.curve)}"
    if ca.ra_renew_days >= ca.ra_validity_days:  # a new RA would be due for renewal at once, every run
        yield (f"{label('ra_renew_days')} ({ca.ra_renew_days}) must be less than {label('ra_validity_days')} "
               f"({ca.ra_validity_days})")


def _distinguished_name(text: str, where: str) -> Iterator[str]:
    try:
        name = parse_name(text)
    except ValueError:
        name = None
    if name is None or not name.rdns:
        yield f"{where} must be an RFC 4514 distinguished name (like 'CN=Name,O=Org'), not {shown(text)}"


def _nul_in_paths(section: object, keys: tuple[str, ...], label: Label) -> Iterator[str]:
    """Paths are built from these settings: no path can hold a NUL character (the OS would refuse it)."""
    for key in keys:
        if "\x00" in (getattr(section, key) or ""):
            yield f"{label(key)} must be a path, which cannot hold a NUL character"


def _intune_values(intune: IntuneConfig, label: Label) -> Iterator[str]:
    yield from _nul_in_paths(intune, ("client_certificate", "client_key", "ca_bundle"), label)
    for key in ("authority", "intune_resource_url", "graph_resource_url"):
        url = getattr(intune, key)
        if not url.startswith("https://"):
            yield f"{label(key)} must be an https:// URL (MSAL and Intune require TLS), not {shown(url)}"


def _intune_pairs(intune: IntuneConfig, label: Label) -> Iterator[str]:
    if intune.proxy_user and not intune.proxy_password.configured:
        yield f"{label('proxy_user')} needs intune.proxy_password (or PROXY_PASS)"
    if bool(intune.client_certificate) != bool(intune.client_key):
        yield "intune.client_certificate and intune.client_key go together: set both or neither"
    if intune.backoff_max < intune.backoff_base:
        yield (f"{label('backoff_max')} must be at least backoff_base ({intune.backoff_base:g}), "
               f"not {intune.backoff_max:g}")


def _profile_pairs(profile: ProfileConfig, label: Label) -> Iterator[str]:
    if profile.hash == "sha1" and not profile.allow_sha1_signature:
        yield f"{label('hash')} sha1 needs allow_sha1_signature: true"
    if profile.min_rsa_bits > profile.max_rsa_bits:
        yield (f"{label('min_rsa_bits')} must not exceed max_rsa_bits ({profile.max_rsa_bits}), "
               f"not {profile.min_rsa_bits}")


def _profile_values(profile: ProfileConfig, label: Label) -> Iterator[str]:
    if profile.hash not in _HASHES:
        yield f"{label('hash')} must be sha256, sha384, sha512 (or sha1), not {shown(profile.hash)}"
    if not set(profile.allowed_key_types) <= {"rsa", "ec"}:
        yield f"{label('allowed_key_types')} takes rsa and/or ec, not {shown(list(profile.allowed_key_types))}"
    for usage in profile.key_usage or ():
        if usage not in KEY_USAGE_NAMES:
            yield f"{label('key_usage')}: unknown usage {shown(usage)} (one of {', '.join(KEY_USAGE_NAMES)})"
    for key in ("extended_key_usage", "allowed_extended_key_usages"):
        for eku in getattr(profile, key) or ():
            if eku not in EKU_NAMES and not _DOTTED_OID.match(eku):
                yield f"{label(key)}: unknown EKU {shown(eku)} (a name such as client_auth, or a dotted OID)"
    if not set(profile.allowed_san_types) <= set(SAN_TYPES):
        yield f"{label('allowed_san_types')} takes {', '.join(SAN_TYPES)}, not {shown(list(profile.allowed_san_types))}"
    if profile.get_cert not in ("own", "any"):
        yield f"{label('get_cert')} must be 'own' or 'any', not {shown(profile.get_cert)}"


# Rules on one value each; rules on settings that must go together.
_VALUE_RULES: dict[type, Rules] = {
    ServerConfig: _server_values,
    CAConfig: _ca_values,
    IntuneConfig: _intune_values,
    ProfileConfig: _profile_values,
}
_PAIR_RULES: dict[type, Rules] = {CAConfig: _ca_pairs, IntuneConfig: _intune_pairs, ProfileConfig: _profile_pairs}
