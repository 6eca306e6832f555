"""The vocabulary of Intune's third-party CA API shared by the client, the emulator and the simulator.

``ScepResultCode`` is what ``validateRequest`` and the notifications answer (intune-api.md §5);
``ChallengeSpec`` is what an Intune SCEP profile asks of a device, so what the challenge claims and
the CSR must carry (intune-api.md §7, §8). Both sides speak the same contract; keeping it in one place
keeps them from drifting apart.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from scep_server.pki.names import parse_name
from scep_server.pki.usages import EKU_NAMES, KEY_USAGE_NAMES

__all__ = ["HASHES", "SAN_TYPES", "ChallengeSpec", "ScepResultCode"]

SAN_TYPES = ("email", "upn", "dns", "uri")
HASHES = ("sha1", "sha256", "sha384", "sha512")
_DOTTED_OID = re.compile(r"^[0-2](\.\d+)+$")
_JSON_NAMES = {
    "subject": "subject",
    "sans": "sans",
    "keyUsage": "key_usage",
    "extendedKeyUsage": "extended_key_usage",
    "keySize": "key_size",
    "hash": "hash",
    "validityDays": "validity_days",
    "deviceId": "device_id",
    "userId": "user_id",
    "certificateRequestId": "certificate_request_id",
    "expiresIn": "expires_in",
}


class ScepResultCode(StrEnum):
    """The ``code`` of a ScepRequestValidationFEService answer (intune-api.md §5)."""

    SUCCESS = "Success"
    CERTIFICATE_REQUEST_DECODING_FAILED = "CertificateRequestDecodingFailed"
    CHALLENGE_PASSWORD_MISSING = "ChallengePasswordMissing"
    CHALLENGE_DESERIALIZATION_ERROR = "ChallengeDeserializationError"
    CHALLENGE_DECRYPTION_ERROR = "ChallengeDecryptionError"
    CHALLENGE_DECODING_ERROR = "ChallengeDecodingError"
    CHALLENGE_INVALID_TIMESTAMP = "ChallengeInvalidTimestamp"
    CHALLENGE_EXPIRED = "ChallengeExpired"
    SUBJECT_NAME_MISSING = "SubjectNameMissing"
    SUBJECT_NAME_MISMATCH = "SubjectNameMismatch"
    SUBJECT_ALT_NAME_MISSING = "SubjectAltNameMissing"
    SUBJECT_ALT_NAME_MISMATCH = "SubjectAltNameMismatch"
    KEY_USAGE_MISMATCH = "KeyUsageMismatch"
    KEY_LENGTH_MISMATCH = "KeyLengthMismatch"
    ENHANCED_KEY_USAGE_MISSING = "EnhancedKeyUsageMissing"
    ENHANCED_KEY_USAGE_MISMATCH = "EnhancedKeyUsageMismatch"
    AAD_KEY_IDENTIFIER_LIST_MISSING = "AadKeyIdentifierListMissing"
    REGISTERED_KEY_MISMATCH = "RegisteredKeyMismatch"
    SIGNING_CERT_THUMBPRINT_MISMATCH = "SigningCertThumbprintMismatch"
    SCEP_PROFILE_NO_LONGER_TARGETED = "ScepProfileNoLongerTargetedToTheClient"
    SIGNATURE_VALIDATION_FAILED = "SignatureValidationFailed"
    BAD_CERTIFICATE_REQUEST_ID_IN_CHALLENGE = "BadCertificateRequestIdInChallenge"
    BAD_DEVICE_ID_IN_CHALLENGE = "BadDeviceIdInChallenge"
    BAD_USER_ID_IN_CHALLENGE = "BadUserIdInChallenge"


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class ChallengeSpec:
    """What a SCEP profile asks of the device (intune-api.md §7, §8).

    ``subject`` is RFC 4514 ("" for a profile without a subject); ``sans`` pairs a type from
    ``SAN_TYPES`` with a value; ``key_usage`` uses ``KEY_USAGE_NAMES``;
    ``extended_key_usage`` takes dotted OIDs (names from ``EKU_NAMES`` are converted); ``hash`` is the
    signature hash the CSR must use. The ids need not be UUIDs here: ``validateRequest`` answers
    BadDeviceIdInChallenge and friends when they are not. ``expires_in=0`` mints an expired challenge, a
    negative one a challenge whose timestamps are invalid. Raises ``ValueError`` on anything else that is
    not well-formed.
    """

    subject: str
    sans: tuple[tuple[str, str], ...] = ()
    key_usage: tuple[str, ...] = ("digital_signature", "key_encipherment")
    extended_key_usage: tuple[str, ...] = ("1.3.6.1.5.5.7.3.2",)
    key_size: int = 2048
    hash: str = "sha256"
    validity_days: int = 365
    device_id: str = field(default_factory=_new_id)
    user_id: str = field(default_factory=_new_id)
    certificate_request_id: str = field(default_factory=_new_id)
    expires_in: int = 3600

    def __post_init__(self) -> None:
        if not isinstance(self.subject, str):
            raise ValueError("subject must be a string")
        if self.subject:
            parse_name(self.subject)
        object.__setattr__(self, "sans", _check_sans(self.sans))
        object.__setattr__(self, "key_usage", _check_key_usage(self.key_usage))
        object.__setattr__(self, "extended_key_usage", _check_ekus(self.extended_key_usage))
        _check_int("key_size", self.key_size, minimum=1)
        _check_int("validity_days", self.validity_days, minimum=1)
        _check_int("expires_in", self.expires_in, minimum=None)
        if self.hash not in HASHES:
            raise ValueError(f"hash must be one of {', '.join(HASHES)}")
        for name in ("device_id", "user_id", "certificate_request_id"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} must be a non-empty string")

    def to_json(self) -> dict[str, Any]:
        """The JSON form (camelCase keys, as the admin API takes it)."""
        data = {json_name: getattr(self, name) for json_name, name in _JSON_NAMES.items()}
        data["sans"] = [{"type": kind, "value": value} for kind, value in self.sans]
        data["keyUsage"] = list(self.key_usage)
        data["extendedKeyUsage"] = list(self.extended_key_usage)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChallengeSpec:
        """Parse the JSON form; only ``subject`` is required. Raises ``ValueError``."""
        if not isinstance(data, Mapping):
            raise ValueError("a challenge spec is a JSON object")
        unknown = sorted(set(data) - set(_JSON_NAMES))
        if unknown:
            raise ValueError(f"unknown challenge spec field(s): {', '.join(unknown)}")
        if "subject" not in data:
            raise ValueError("subject is required")
        values = {_JSON_NAMES[key]: value for key, value in data.items()}
        if "sans" in values:
            values["sans"] = _sans_from_json(values["sans"])
        return cls(**values)


def _check_int(name: str, value: object, *, minimum: int | None) -> None:
    if type(value) is not int or (minimum is not None and value < minimum):
        raise ValueError(f"{name} must be an integer" + (f" >= {minimum}" if minimum is not None else ""))


def _check_sans(sans: Any) -> tuple[tuple[str, str], ...]:
    message = f"a SAN is (type, value) with type one of {', '.join(SAN_TYPES)} and a non-empty value"
    try:
        pairs = tuple((kind, value) for kind, value in sans)
    except (TypeError, ValueError):
        raise ValueError(message) from None
    if any(kind not in SAN_TYPES or not isinstance(value, str) or not value for kind, value in pairs):
        raise ValueError(message)
    return pairs


def _sans_from_json(sans: Any) -> list[tuple[str, str]]:
    if not isinstance(sans, list):
        raise ValueError("sans must be a list of {type, value} objects")
    try:
        return [(item["type"], item["value"]) for item in sans]
    except (KeyError, TypeError):
        raise ValueError("sans must be a list of {type, value} objects") from None


def _check_key_usage(usages: Any) -> tuple[str, ...]:
    checked = tuple(_strings("key_usage", usages))
    unknown = [u for u in checked if u not in KEY_USAGE_NAMES]
    if unknown:
        raise ValueError(f"unknown key usage(s) {', '.join(unknown)}; known: {', '.join(KEY_USAGE_NAMES)}")
    return checked


def _check_ekus(ekus: Any) -> tuple[str, ...]:
    checked = tuple(EKU_NAMES.get(eku, eku) for eku in _strings("extended_key_usage", ekus))
    for eku in checked:
        if not _DOTTED_OID.match(eku):
            raise ValueError(f"extended_key_usage {eku!r} is neither a dotted OID nor a known name")
    return checked


def _strings(name: str, values: Any) -> list[str]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a list of strings")
    strings = list(values)
    if not all(isinstance(v, str) for v in strings):
        raise ValueError(f"{name} must be a list of strings")
    return strings
