"""Configuration: frozen dataclasses loaded from a YAML file, with secrets taken from env or files.

Every setting has an embedded default, so ``scep-server serve`` with no file at all runs a server
(SQLite and an auto-created CA under ``./var``); it keeps the CA keys encrypted, so it needs
``SCEP_CA_PASSPHRASE`` unless a config file says ``dev: true`` (config/dev.yaml, ``make run``).
Environment variables named ``SCEP_SERVER_<KEY>`` override the top-level scalar keys
(``SCEP_SERVER_DATA_DIR``, ``SCEP_SERVER_DATABASE_URL``, ``SCEP_SERVER_PUBLIC_URL``, ...), but never ``dev``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

KEY_USAGE_NAMES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
)
EKU_NAMES = {
    "client_auth": "1.3.6.1.5.5.7.3.2",
    "server_auth": "1.3.6.1.5.5.7.3.1",
    "email_protection": "1.3.6.1.5.5.7.3.4",
    "code_signing": "1.3.6.1.5.5.7.3.3",
    "ipsec_ike": "1.3.6.1.5.5.7.3.17",
    "ipsec_tunnel": "1.3.6.1.5.5.7.3.6",
    "ipsec_user": "1.3.6.1.5.5.7.3.7",
    "ipsec_end_system": "1.3.6.1.5.5.7.3.5",
    "smartcard_logon": "1.3.6.1.4.1.311.20.2.2",
    "any_extended_key_usage": "2.5.29.37.0",
    "certificate_request_agent": "1.3.6.1.4.1.311.20.2.1",
    "ocsp_signing": "1.3.6.1.5.5.7.3.9",
    "pkinit_client_auth": "1.3.6.1.5.2.3.4",
    "pkinit_kdc": "1.3.6.1.5.2.3.5",
}
SAN_TYPES = ("dns", "email", "upn", "uri", "ip")  # the subjectAltName kinds a certificate can carry
PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class SecretSource:
    """Where a secret comes from: an environment variable, a file, or (dev only) inline."""

    env: str | None = None
    file: str | None = None
    value: str | None = None

    def resolve(self) -> str | None:
        if self.env and os.environ.get(self.env):
            return os.environ[self.env]
        if self.file:
            try:
                return Path(self.file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read secret file {self.file}: {exc.strerror}") from exc
        return self.value

    @property
    def configured(self) -> bool:
        return bool(self.env or self.file or self.value)


@dataclass(frozen=True, slots=True)
class CAConfig:
    """The issuing CA and its RA (the SCEP message signer/decrypter)."""

    name: str = "scep-server-ca"
    subject: str = "CN=scep-server Dev CA,O=scep-server"
    key_type: str = "rsa"  # rsa | ec
    key_size: int = 3072  # RSA bits
    curve: str = "P-256"  # EC curve: P-256 | P-384
    validity_days: int = 3650
    ra_subject: str = "CN=scep-server RA,O=scep-server"
    ra_validity_days: int = 730
    key_passphrase: SecretSource = field(default_factory=lambda: SecretSource(env="SCEP_CA_PASSPHRASE"))
    include_root_in_getcacert: bool = True
    crl_validity_hours: int = 168
    ocsp_subject: str = "CN=scep-server OCSP Responder,O=scep-server"
    ocsp_validity_days: int = 30
    ocsp_response_validity_minutes: int = 60
    # ``serve`` refuses CA/RA keys without key_passphrase unless this is true (or the config says dev: true).
    allow_unencrypted_keys: bool = False


@dataclass(frozen=True, slots=True)
class ChallengeConfig:
    """How a profile checks the challengePassword: ``static`` (a shared secret) or ``intune``.

    ``on_intune_unavailable``: ``fail`` answers FAILURE when Intune cannot be reached; ``pending``
    answers PENDING and keeps validating in the background until the device's CertPoll finds the
    result.
    """

    type: str = "static"
    secret: SecretSource = field(default_factory=lambda: SecretSource(env="SCEP_CHALLENGE"))
    on_intune_unavailable: str = "fail"
    pending_timeout_minutes: int = 60


@dataclass(frozen=True, slots=True)
class ProfileConfig:
    """Issuance policy of one SCEP profile, served at ``/scep/<name>`` (``default`` also at ``/scep``)."""

    name: str = "default"
    challenge: ChallengeConfig = field(default_factory=ChallengeConfig)
    validity_days: int = 365
    backdate_minutes: int = 60
    hash: str = "sha256"  # sha256 | sha384 | sha512 (sha1 only with allow_sha1_signature)
    allow_sha1_signature: bool = False
    allowed_key_types: tuple[str, ...] = ("rsa", "ec")
    min_rsa_bits: int = 2048
    max_rsa_bits: int = 8192
    allowed_curves: tuple[str, ...] = ("P-256", "P-384", "P-521")
    key_usage: tuple[str, ...] | None = None  # None: take from the CSR, else forced
    extended_key_usage: tuple[str, ...] | None = None  # None: take from the CSR, else forced
    # EKUs a CSR may ask for beyond client_auth (static) or what Intune validated (intune); the restricted
    # ones (anyExtendedKeyUsage, Certificate Request Agent, Smartcard Logon, OCSP Signing, PKINIT) need it.
    allowed_extended_key_usages: tuple[str, ...] = ()
    allowed_san_types: tuple[str, ...] = SAN_TYPES  # a SID URI counts as allow_sid_extension, not as uri
    max_sans: int = 20
    max_subject_length: int = 512  # characters of the subject as an RFC 4514 string
    max_san_length: int = 256  # characters of one subjectAltName value
    allow_sid_extension: bool = False  # the SID extension and the tag:microsoft.com,2022-09-14:sid: URI SAN
    allow_des: bool = False
    allow_3des: bool = True  # 3DES envelopes (Windows and Apple may use them); off: not offered in GetCACaps
    allow_sha1: bool = True  # SHA-1 message digests in SCEP envelopes and SHA-1-signed CSRs (Windows, Apple legacy)
    allow_renewal: bool = True
    get_cert: str = "own"  # GetCert answers: own (the signer's own certificates) | any (any of this profile)
    require_signer_subject: bool = False  # a PKCSReq signer must carry the CSR subject too (its key always)


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


@dataclass(frozen=True, slots=True)
class IntuneConfig:
    """How to reach Intune (or the bundled emulator): Entra ID app credentials and every URL.

    Sovereign clouds differ only in the URLs. Either ``client_secret`` or ``client_certificate`` +
    ``client_key`` authenticates the app (Microsoft's name for the secret is AAD_APP_KEY).
    """

    tenant: str | None = None
    client_id: str | None = None
    client_secret: SecretSource = field(default_factory=lambda: SecretSource(env="AAD_APP_KEY"))
    client_certificate: str | None = None  # PEM file: the certificate registered on the app
    client_key: str | None = None  # PEM file: its private key
    client_key_password: SecretSource = field(default_factory=SecretSource)
    provider_name_and_version: str = "scep-server/0.1.0"
    authority: str = "https://login.microsoftonline.com/"
    intune_resource_url: str = "https://api.manage.microsoft.com/"
    graph_resource_url: str = "https://graph.microsoft.com/"
    graph_api_version: str = "1.0"
    intune_app_id: str = "0000000a-0000-0000-c000-000000000000"
    ca_bundle: str | None = None  # PEM bundle to verify Entra ID/Graph/Intune TLS; None = the system store
    proxy_host: str | None = None
    proxy_port: int | None = None
    proxy_user: str | None = None
    proxy_password: SecretSource = field(default_factory=lambda: SecretSource(env="PROXY_PASS"))
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 8.0
    revocation_poll_seconds: int = 300
    revocation_batch_size: int = 100
    revocation_issuer_filter: str | None = None
    # Hosts a Graph-discovered Intune service URL may name: each entry matches itself and its subdomains
    # (an IP address only itself). The token and device CSRs go only there.
    allowed_service_hosts: tuple[str, ...] = ("manage.microsoft.com",)

    @property
    def configured(self) -> bool:
        return bool(self.tenant and self.client_id)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    """What one HTTP request may cost before the application sees it (enforced by the gunicorn workers).

    The workers read each request's head, and a body of known length, without a thread: a slow client
    holds a socket and a buffer until its deadline, never a thread.
    """

    request_line_bytes: int = 8190  # longer: HTTP 414 (a GET PKIOperation that long must be POSTed)
    header_fields: int = 50  # more: HTTP 431
    header_field_bytes: int = 8190  # a longer header field: HTTP 431
    # The whole request head, from the connection (kept alive: from its first byte); else HTTP 408.
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0  # the body, after the head; also each response write
    connections_per_worker: int = 200  # open connections per worker; more wait in the listen queue


@dataclass(frozen=True, slots=True)
class FailureBudgetConfig:
    """How many PKIOperations whose envelope fails (undecryptable, unparseable, bad signature) one client IP
    may send per sliding window before it gets HTTP 429; kept per worker process. max_failures 0: off."""

    max_failures: int = 20
    window_seconds: int = 60
    max_tracked_ips: int = 10000  # beyond this, the IPs that failed longest ago are forgotten


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Top-level configuration."""

    data_dir: str = "var"
    database_url: str | None = None  # default: sqlite under data_dir
    public_url: str | None = None
    max_body_bytes: int = 256 * 1024
    trusted_proxy_hops: int = 0  # reverse proxies in front whose X-Forwarded-For is trusted
    # After this a PENDING transaction's handler is presumed dead: a retry of the request takes it over.
    transaction_lease_seconds: int = 300
    # Bearer token of the admin API (/admin/...); unset: the admin API is off.
    admin_token: SecretSource = field(default_factory=lambda: SecretSource(env="SCEP_SERVER_ADMIN_TOKEN"))
    log_level: str = "INFO"
    # A development setup (config/dev.yaml): ``serve`` accepts unencrypted CA/RA keys. Only set in the file.
    dev: bool = False
    ca: CAConfig = field(default_factory=CAConfig)
    intune: IntuneConfig = field(default_factory=IntuneConfig)
    profiles: tuple[ProfileConfig, ...] = (ProfileConfig(),)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    failure_budget: FailureBudgetConfig = field(default_factory=FailureBudgetConfig)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'scep-server.db'}"

    @property
    def ca_dir(self) -> Path:
        return Path(self.data_dir) / "ca"

    def profile(self, name: str) -> ProfileConfig | None:
        return next((p for p in self.profiles if p.name == name), None)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> ServerConfig:
    """Load the YAML file at ``path`` (or none: defaults) and apply ``SCEP_SERVER_*`` overrides."""
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping")
        raw = loaded or {}
    config = _build_server(raw)
    config = replace(config, intune=_apply_intune_env(config.intune, env))
    config = _apply_env(config, env)
    _validate_intune(config)
    return config


def _apply_env(config: ServerConfig, env: Mapping[str, str]) -> ServerConfig:
    overrides: dict[str, Any] = {}
    for f in fields(ServerConfig):
        value = env.get(f"SCEP_SERVER_{f.name.upper()}")
        if value is None or f.name in ("ca", "profiles", "intune", "admin_token", "dev", "limits", "failure_budget"):
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
    _reject_unknown(raw, known, "top level")
    values = {k: v for k, v in raw.items() if k not in ("ca", "profiles", "intune", "limits", "failure_budget")}
    if "admin_token" in values:
        values["admin_token"] = _secret(values["admin_token"], "admin_token")
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
    _reject_unknown(raw, set(_LIMIT_RANGES), "limits")
    for key, value in raw.items():
        low, high, fractional = _LIMIT_RANGES[key]
        kinds = (int, float) if fractional else (int,)
        if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
            kind = "a number" if fractional else "an integer"
            raise ConfigError(f"limits.{key} must be {kind} from {low:g} to {high:g}")
    return LimitsConfig(**raw)


def _build_failure_budget(raw: Mapping[str, Any]) -> FailureBudgetConfig:
    _reject_unknown(raw, {f.name for f in fields(FailureBudgetConfig)}, "failure_budget")
    for key, low in (("max_failures", 0), ("window_seconds", 1), ("max_tracked_ips", 1)):
        value = raw.get(key, low)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"failure_budget.{key} must be an integer >= {low}")
    return FailureBudgetConfig(**raw)


def _build_intune(raw: Mapping[str, Any]) -> IntuneConfig:
    _reject_unknown(raw, {f.name for f in fields(IntuneConfig)}, "intune")
    values = dict(raw)
    for key in ("client_secret", "client_key_password", "proxy_password"):
        if key in values:
            values[key] = _secret(values[key], f"intune.{key}")
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
    uses_intune = any(p.challenge.type == "intune" for p in config.profiles)
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
    _reject_unknown(raw, {f.name for f in fields(CAConfig)}, "ca")
    values = dict(raw)
    if "key_passphrase" in values:
        values["key_passphrase"] = _secret(values["key_passphrase"], "ca.key_passphrase")
    ca = CAConfig(**values)
    if ca.key_type not in ("rsa", "ec"):
        raise ConfigError("ca.key_type must be 'rsa' or 'ec'")
    if ca.key_type == "rsa" and not 2048 <= ca.key_size <= 4096:
        raise ConfigError("ca.key_size must be between 2048 and 4096")
    if ca.key_type == "ec" and ca.curve not in ("P-256", "P-384"):
        raise ConfigError("ca.curve must be P-256 or P-384")
    if ca.ocsp_validity_days < 1:
        raise ConfigError("ca.ocsp_validity_days must be >= 1")
    if not isinstance(ca.allow_unencrypted_keys, bool):
        raise ConfigError("ca.allow_unencrypted_keys must be true or false")
    if not 1 <= ca.ocsp_response_validity_minutes <= 10080:
        raise ConfigError("ca.ocsp_response_validity_minutes must be between 1 and 10080")
    return ca


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
    _reject_unknown(raw, {f.name for f in fields(ProfileConfig)} - {"name"}, where)
    values: dict[str, Any] = dict(raw)
    values["challenge"] = _challenge(raw.get("challenge") or {}, where)
    for key in ("allowed_key_types", "allowed_curves", "key_usage", "extended_key_usage"):
        if values.get(key) is not None:
            values[key] = tuple(str(v) for v in values[key])
    for key in ("allowed_extended_key_usages", "allowed_san_types"):
        if key in values:
            values[key] = _string_list(values[key], f"{where}.{key}")
    profile = ProfileConfig(name=name, **values)
    _validate_profile(profile, where)
    return profile


def _string_list(raw: Any, where: str) -> tuple[str, ...]:
    """A YAML list of names (null: none)."""
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        raise ConfigError(f"{where} must be a list")
    return tuple(str(item) for item in raw)


def _challenge(raw: Mapping[str, Any], where: str) -> ChallengeConfig:
    _reject_unknown(raw, {"type", "secret", "on_intune_unavailable", "pending_timeout_minutes"}, f"{where}.challenge")
    kind = str(raw.get("type", "static"))
    if kind not in ("static", "intune"):
        raise ConfigError(f"{where}.challenge.type must be 'static' or 'intune'")
    secret = _secret(raw["secret"], f"{where}.challenge.secret") if "secret" in raw else SecretSource(
        env="SCEP_CHALLENGE"
    )
    mode = str(raw.get("on_intune_unavailable", "fail"))
    if mode not in ("fail", "pending"):
        raise ConfigError(f"{where}.challenge.on_intune_unavailable must be 'fail' or 'pending'")
    timeout = int(raw.get("pending_timeout_minutes", 60))
    if timeout < 1:
        raise ConfigError(f"{where}.challenge.pending_timeout_minutes must be >= 1")
    return ChallengeConfig(type=kind, secret=secret, on_intune_unavailable=mode, pending_timeout_minutes=timeout)


def _secret(raw: Any, where: str) -> SecretSource:
    if raw is None:
        return SecretSource()
    if isinstance(raw, str):
        return SecretSource(value=raw)
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a string or a mapping with env/file/value")
    _reject_unknown(raw, {"env", "file", "value"}, where)
    return SecretSource(**{k: str(v) for k, v in raw.items()})


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
        if eku not in EKU_NAMES and not re.match(r"^\d+(\.\d+)+$", eku):
            raise ConfigError(f"{where}.extended_key_usage: unknown EKU {eku!r} (a name or dotted OID)")
    if profile.get_cert not in ("own", "any"):
        raise ConfigError(f"{where}.get_cert must be 'own' or 'any'")
    _validate_name_policy(profile, where)


def _validate_name_policy(profile: ProfileConfig, where: str) -> None:
    """The allow-lists and limits on what a CSR may ask for (EKUs, subjectAltNames, name lengths)."""
    for eku in profile.allowed_extended_key_usages:
        if eku not in EKU_NAMES and not re.match(r"^\d+(\.\d+)+$", eku):
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


def _reject_unknown(raw: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) in {where}: {', '.join(unknown)}")
