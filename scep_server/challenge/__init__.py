"""Challenge validators: decide whether a certification request may be issued.

A validator sees the SCEP transactionID and the DER CSR (which carries the challengePassword) — the
inputs Intune's validateRequest takes — and either returns (accept), raises
:class:`~scep_server.errors.ChallengeRejected` (a definite no, with the validator's reason code) or raises
:class:`~scep_server.errors.ValidatorUnavailable` (could not decide now: the caller may answer PENDING and retry).
Validators may block for hundreds of milliseconds; they are called outside any database transaction.
After issuance the validator is told the outcome (Intune wants success/failure notifications).
A validator may also accept less than was asked for: ``validate`` then returns an
:class:`IssuanceNarrowing` (fewer subjectAltNames, a shorter validity), which issuance applies.

Every module of this package is a validator that registers itself with :func:`register`, keyed by the
``challenge.type`` that selects it, together with the class of its configuration section; a new kind of
validator is one new module here. :func:`build_validator` builds the one a profile names.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, fields
from typing import Protocol, TypeVar, runtime_checkable

from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scep_server.config.model import ChallengeConfig, ProfileConfig, UnavailablePolicy
from scep_server.config.sections import register_section
from scep_server.errors import ConfigError

__all__ = [
    "ChallengeValidator",
    "IssuanceNarrowing",
    "IssuedCertificate",
    "Resources",
    "ValidationRequest",
    "ValidatorClass",
    "build_validator",
    "challenge_password",
    "defers_when_unavailable",
    "needs_intune",
    "register",
    "registered_types",
    "validator_class",
]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ValidationRequest:
    """What a validator decides on."""

    profile: str
    transaction_id: str
    csr: x509.CertificateSigningRequest
    csr_der: bytes
    requester_ip: str | None
    renewal: bool = False  # a RenewalReq (signed by the certificate it renews), else a PKCSReq


@dataclass(frozen=True, slots=True)
class IssuanceNarrowing:
    """What a validator grants when it accepts less than the request asks for.

    ``sans``: only these of the CSR's own subjectAltNames are certified (None: every one the profile
    allows). ``validity_days``: the certificate's validity, at most the profile's (None: the profile's);
    issuance refuses a longer one. A narrowing never adds anything.
    """

    sans: tuple[x509.GeneralName, ...] | None = None
    validity_days: int | None = None


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """What a validator is told after a certificate was issued and stored."""

    certificate: x509.Certificate
    issuer: x509.Certificate
    ca_name: str


@runtime_checkable
class ChallengeValidator(Protocol):
    """The plug-in interface every challenge validator implements."""

    name: str
    # Whether a RenewalReq (authenticated by the certificate it renews) is validated too.
    validates_renewals: bool
    # Whether notify_issued may refuse the delivery or must hear of each issuance before the device
    # does (Intune). False lets a new transaction be validated, signed and stored in one step.
    confirms_issuance: bool

    def validate(self, request: ValidationRequest) -> IssuanceNarrowing | None:
        """Return to accept (a narrowing to grant less than asked); raise ChallengeRejected to refuse,
        ValidatorUnavailable when undecided."""

    def notify_issued(self, request: ValidationRequest, issued: IssuedCertificate) -> None:
        """Called once the certificate is stored; raising ValidatorUnavailable means 'do not deliver it'."""

    def notify_failed(self, request: ValidationRequest, hresult: int, description: str) -> None:
        """Called when issuance failed after a successful validation."""


@dataclass(frozen=True, slots=True)
class Resources:
    """What the composition root built once for the validators that need it, found by its class
    (the Intune client and the notification outbox for ``intune``, say)."""

    items: tuple[object, ...] = ()

    def find(self, kind: type[_T]) -> _T | None:
        return next((item for item in self.items if isinstance(item, kind)), None)


class ValidatorClass(Protocol):
    """A registered validator class: the ``type`` that selects it, its section and how it is built."""

    @property
    def name(self) -> str: ...

    @property
    def settings_class(self) -> type[ChallengeConfig]: ...

    @property
    def may_be_unavailable(self) -> bool:
        """It can fail to decide now (ValidatorUnavailable), so ``on_validator_unavailable: pending`` applies to it."""
        ...

    def from_settings(self, profile: str, settings: ChallengeConfig, resources: Resources) -> ChallengeValidator:
        """The validator of ``profile``; ConfigError when it cannot be built (a missing secret, say)."""
        ...


_V = TypeVar("_V", bound=ValidatorClass)
_VALIDATORS: dict[str, ValidatorClass] = {}


def register(cls: _V) -> _V:
    """Class decorator: make ``cls`` the validator of ``challenge.type: cls.name``."""
    registered = _VALIDATORS.get(cls.name)
    if registered is not None and registered is not cls:
        raise ValueError(f"challenge type {cls.name!r} is registered already")
    register_section(cls.name, cls.settings_class)
    _VALIDATORS[cls.name] = cls
    return cls


def registered_types() -> tuple[str, ...]:
    """Every registered ``challenge.type``, sorted."""
    return tuple(sorted(_VALIDATORS))


def validator_class(type_name: str) -> ValidatorClass:
    """The validator class registered for ``type_name``; ConfigError listing the registered types otherwise."""
    try:
        return _VALIDATORS[type_name]
    except KeyError:
        raise ConfigError(
            f"unknown challenge type {type_name!r}; the registered types are {', '.join(registered_types())}"
        ) from None


def build_validator(profile: ProfileConfig, resources: Resources) -> ChallengeValidator:
    """The validator of ``profile``; ConfigError when it cannot be built (a missing secret, say)."""
    cls = validator_class(profile.challenge.type)
    return cls.from_settings(profile.name, _typed(profile.challenge, cls.settings_class), resources)


def needs_intune(settings: ChallengeConfig) -> bool:
    """Whether the validator of these settings calls Intune (the Intune client must be built for it)."""
    return validator_class(settings.type).settings_class.needs_intune


def defers_when_unavailable(settings: ChallengeConfig) -> bool:
    """Whether a request its validator cannot decide now is answered PENDING and decided in the background."""
    cls = validator_class(settings.type)
    return cls.may_be_unavailable and settings.on_validator_unavailable == UnavailablePolicy.PENDING


def challenge_password(csr: x509.CertificateSigningRequest) -> str | None:
    """The challengePassword attribute (PKCS#9, RFC 2985 §5.4.1) of a CSR, or None.

    None too when the attribute appears more than once, holds more than one value, or is not a
    DirectoryString (IA5String is read as well: older clients send it). A secret sent as an OCTET STRING
    is not a challenge, and a BMPString is read as the UTF-16 it is.
    """
    der = csr.public_bytes(serialization.Encoding.DER)
    attributes = asn1_csr.CertificationRequest.load(der)["certification_request_info"]["attributes"]
    found = [attribute for attribute in attributes if attribute["type"].native == "challenge_password"]
    if len(found) != 1:
        return None
    try:
        values = found[0]["values"]
        value = values[0].native if len(values) == 1 else None
    except (ValueError, TypeError, KeyError):  # a value that is not one of the string types
        return None
    return value if isinstance(value, str) else None


def _typed(settings: ChallengeConfig, cls: type[ChallengeConfig]) -> ChallengeConfig:
    """``settings`` as ``cls``: a bare ChallengeConfig keeps its common settings and takes the defaults of the rest."""
    if isinstance(settings, cls):
        return settings
    return cls(**{f.name: getattr(settings, f.name) for f in fields(ChallengeConfig)})


def _register_builtin_validators() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_register_builtin_validators()
