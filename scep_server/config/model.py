"""The configuration as values: frozen dataclasses with every default, and the enumerations they use.

:mod:`scep_server.config.load` builds them from YAML and the environment and validates them; code that
needs a setting is handed the dataclass of its section.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from scep_server.config.parsing import enum_value, integer, parser, reject_unknown, shown
from scep_server.errors import ConfigError
from scep_server.pki.reasons import CRLReason
from scep_server.pki.sans import SAN_TYPES

__all__ = [
    "CAConfig",
    "ChallengeConfig",
    "DeviceIdConfig",
    "DeviceIdSource",
    "DeviceLifecycle",
    "FailureBudgetConfig",
    "IntuneConfig",
    "KeyType",
    "LimitsConfig",
    "ProfileConfig",
    "SecretSource",
    "ServerConfig",
    "UnavailablePolicy",
]


class KeyType(StrEnum):
    """The CA's key algorithm."""

    RSA = "rsa"
    EC = "ec"


class UnavailablePolicy(StrEnum):
    """What a profile answers when its challenge validator cannot decide now (its upstream is unreachable)."""

    FAIL = "fail"  # a CertRep FAILURE
    PENDING = "pending"  # PENDING; validation goes on in the background until the device's CertPoll finds it


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

    @classmethod
    def parse(cls, raw: Any, where: str) -> SecretSource:
        """A secret setting: a string (inline, dev only), a mapping with env/file/value, or null (none).

        A scalar of another type is refused by its type alone: it may be the secret itself, typed without
        quotes (``key_passphrase: 12345``), and messages never show secrets."""
        if raw is None:
            return cls()
        if isinstance(raw, str):
            return cls(value=raw)
        if not isinstance(raw, dict):
            found = shown(raw) if isinstance(raw, list) else _scalar_kind(raw)
            raise ConfigError(f"{where} must be a string or a mapping with env/file/value, not {found}")
        reject_unknown(raw, {"env", "file", "value"}, where)
        for key, value in raw.items():
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{where}.{key} must be a string (quote it), not {_scalar_kind(value)}")
        if "\x00" in (raw.get("file") or ""):
            raise ConfigError(f"{where}.file must be a file's path, which cannot hold a NUL character")
        return cls(**raw)


def _scalar_kind(value: Any) -> str:
    """What a YAML value is, without the value."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return f"a YAML {type(value).__name__}"


DEFAULT_KEY_BACKEND = "file"


@dataclass(frozen=True, slots=True)
class KeyBackendConfig:
    """Where the CA, RA and OCSP responder keys live (``ca.keys``): ``type`` names a key backend
    (``scep_server.ca.keys``: ``file``, ``pkcs11``), and the section of the same name holds its settings,
    which the backend checks when it is opened (``ca.keys: {type: pkcs11, pkcs11: {module: ..., ...}}``)."""

    type: str = DEFAULT_KEY_BACKEND
    settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)

    @classmethod
    def parse(cls, raw: Any, where: str) -> KeyBackendConfig:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where} must be a mapping with a type and that type's section, not {raw!r}")
        kind = raw.get("type", DEFAULT_KEY_BACKEND)
        if not isinstance(kind, str) or not kind:
            raise ConfigError(f"{where}.type must be the name of a key backend (file, pkcs11), not {kind!r}")
        unknown = sorted(str(key) for key in raw if key not in ("type", kind))
        if unknown:
            raise ConfigError(f"unknown key {where}.{unknown[0]}: {where} holds only type and a {kind} section")
        settings = raw.get(kind) or {}
        if not isinstance(settings, Mapping):
            raise ConfigError(f"{where}.{kind} must be a mapping of that backend's settings")
        return cls(kind, MappingProxyType({str(key): value for key, value in settings.items()}))


@dataclass(frozen=True, slots=True)
class CAConfig:
    """The issuing CA and its RA (the SCEP message signer/decrypter)."""

    name: str = "scep-server-ca"
    subject: str = "CN=scep-server Dev CA,O=scep-server"
    key_type: KeyType = KeyType.RSA
    key_size: int = 3072  # RSA bits
    curve: str = "P-256"  # EC curve: P-256 | P-384
    validity_days: int = 3650
    ra_subject: str = "CN=scep-server RA,O=scep-server"
    ra_validity_days: int = 730
    ra_grace_days: int = 7  # a replaced RA keeps decrypting requests encrypted to it this long
    ra_renew_days: int = 30  # the RA is renewed automatically when it enters its last this many days
    key_passphrase: SecretSource = field(default_factory=lambda: SecretSource(env="SCEP_CA_PASSPHRASE"))
    include_root_in_getcacert: bool = True
    crl_validity_hours: int = 168
    ocsp_subject: str = "CN=scep-server OCSP Responder,O=scep-server"
    ocsp_validity_days: int = 30
    ocsp_response_validity_minutes: int = 60
    # ``serve`` refuses CA/RA keys without key_passphrase unless this is true (or the config says dev: true).
    allow_unencrypted_keys: bool = False
    keys: KeyBackendConfig = field(default_factory=KeyBackendConfig)


@dataclass(frozen=True, slots=True)
class ChallengeConfig:
    """How a profile checks the challengePassword: the settings every validator's section has.

    Each validator (``scep_server.challenge``) registers a subclass that adds its own settings, and
    ``type`` chooses it. A bare ``ChallengeConfig`` names a type and takes that validator's defaults.
    ``on_validator_unavailable`` applies to validators that can be unreachable (``intune``): ``fail``
    answers FAILURE, ``pending`` answers PENDING and keeps validating in the background for up to
    ``pending_timeout_minutes``.
    """

    # The validator calls Intune: the ``intune`` section must name the tenant and the app.
    needs_intune: ClassVar[bool] = False

    type: str = "static"
    on_validator_unavailable: UnavailablePolicy = field(
        default=UnavailablePolicy.FAIL, metadata=parser(enum_value(UnavailablePolicy))
    )
    pending_timeout_minutes: int = field(default=60, metadata=parser(integer(1)))


class DeviceIdSource(StrEnum):
    """Where a profile's certificates name the device behind them (``device_id.source``)."""

    INTUNE_SAN_URI = "intune_san_uri"  # a URI subjectAltName IntuneDeviceId://<Intune managed device id>
    ENTRA_SAN_URI = "entra_san_uri"  # a URI subjectAltName <uri_prefix><Entra ID device id>
    ENTRA_OID = "entra_oid"  # the Entra ID device id in the subject attribute or extension ``oid``


class DeviceLifecycle(StrEnum):
    """What the device lifecycle sync does to a profile's certificates (docs/device-lifecycle.md)."""

    REVOKE = "revoke"  # a device deleted or retired: its certificates are revoked
    OCSP_ONLY = "ocsp-only"  # the same, and while the device is disabled OCSP answers certificateHold
    OFF = "off"


INTUNE_DEVICE_URI_PREFIX = "IntuneDeviceId://"
ENTRA_DEVICE_URI_PREFIX = "EntraDeviceId://"
_DOTTED_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


@dataclass(frozen=True, slots=True)
class DeviceIdConfig:
    """``device_id: {source: ..., oid: ..., uri_prefix: ...}``: how a profile's certificates name their device.

    ``uri_prefix`` (the URI sources) defaults to ``IntuneDeviceId://`` or ``EntraDeviceId://``; ``oid``
    (``entra_oid``, required there) is a dotted OID."""

    source: DeviceIdSource = field(default=DeviceIdSource.INTUNE_SAN_URI,
                                   metadata=parser(enum_value(DeviceIdSource)))
    oid: str | None = None
    uri_prefix: str | None = None

    @property
    def kind(self) -> str:
        """The store's ``device_id_kind``: ``intune`` (a managed device id) or ``entra`` (an Entra ID device id)."""
        return "intune" if self.source is DeviceIdSource.INTUNE_SAN_URI else "entra"

    @property
    def prefix(self) -> str:
        default = INTUNE_DEVICE_URI_PREFIX if self.source is DeviceIdSource.INTUNE_SAN_URI else ENTRA_DEVICE_URI_PREFIX
        return self.uri_prefix or default

    def check(self, where: str) -> None:
        if self.source is DeviceIdSource.ENTRA_OID and not (self.oid and _DOTTED_OID.match(self.oid)):
            raise ConfigError(f"{where}.oid must be a dotted OID (like 2.5.4.3) with source entra_oid, "
                              f"not {shown(self.oid)}")
        if self.source is not DeviceIdSource.ENTRA_OID and self.oid is not None:
            raise ConfigError(f"{where}.oid is read only with source entra_oid")
        if self.uri_prefix is not None and (not self.uri_prefix or self.source is DeviceIdSource.ENTRA_OID):
            raise ConfigError(f"{where}.uri_prefix must be a non-empty URI prefix, read only with the URI sources")


def _device_lifecycle(raw: Any, where: str) -> DeviceLifecycle:
    """``revoke``, ``ocsp-only`` or ``off`` (YAML reads a bare ``off`` as false: that is off too)."""
    return DeviceLifecycle.OFF if raw is False else enum_value(DeviceLifecycle)(raw, where)


def _revocation_reason(raw: Any, where: str) -> str:
    """An RFC 5280 CRLReason a certificate can be revoked with, by name (``cessationOfOperation``)."""
    try:
        reason = CRLReason.from_name(raw) if isinstance(raw, str) else None
    except ValueError:
        reason = None
    if reason is None or reason is CRLReason.REMOVE_FROM_CRL:
        raise ConfigError(f"{where} must name a CRLReason such as cessationOfOperation, not {shown(raw)}")
    return reason.rfc_name


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
    # PKIOperations of this profile in flight at once in one worker process; past it HTTP 503 with
    # Retry-After (PENDING where the validator defers). 0: no cap beyond the worker's threads.
    max_concurrent_operations: int = 0
    # The device behind each certificate (stored with it), and what the device lifecycle sync does when
    # Graph says that device is gone or disabled (docs/device-lifecycle.md).
    device_id: DeviceIdConfig = field(default_factory=DeviceIdConfig)
    device_lifecycle: DeviceLifecycle = field(default=DeviceLifecycle.OFF, metadata=parser(_device_lifecycle))
    device_lifecycle_reason: str = field(default="cessationOfOperation", metadata=parser(_revocation_reason))


def _seconds(low: float, high: float) -> Callable[[Any, str], float]:
    """A parser of a number of seconds from ``low`` to ``high``."""

    def parse(raw: Any, where: str) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not low <= raw <= high:
            raise ConfigError(f"{where} must be a number from {low:g} to {high:g} (seconds), not {shown(raw)}")
        return float(raw)

    return parse


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
    # The device lifecycle sync's interval, and how long a PKCSReq for a subject or device that still
    # holds a valid certificate waits for one Intune revocation round first (0: it does not).
    device_lifecycle_interval_seconds: int = field(default=3600, metadata=parser(integer(60)))
    # Revocation is final: a pass that finds more gone devices than this (a wrong tenant, a Graph outage
    # answering 404) stops revoking, logs an error and leaves the rest to an operator.
    device_lifecycle_max_revocations: int = field(default=500, metadata=parser(integer(1)))
    revocation_poll_before_reissue_seconds: float = field(default=5.0, metadata=parser(_seconds(0, 60)))

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
    log_format: str = "text"  # text | json: one JSON object per line for the app, gunicorn and access logs
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
