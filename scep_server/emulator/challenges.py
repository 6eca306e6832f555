"""What an Intune SCEP profile asks of a device, and the emulator's sealed challenge format.

Intune's own challenge format is secret (intune-api.md §8); this one has the same properties: it is
signed and encrypted with the emulator's keys and carries everything ``validateRequest`` compares with
the CSR. Format, version 1::

    challenge = base64( 0x01 || nonce(12) || AES-256-GCM(aes_key, nonce, inner, aad=0x01) )
    inner     = signature(64) || body
    signature = ECDSA P-256 / SHA-256 over body, raw r || s (32 bytes each, big-endian)
    body      = zlib( JSON {"v": 1, "spec": <ChallengeSpec.to_json()>, "iat": <unix s>, "exp": <unix s>} )

Standard base64 with padding, not base64url: the challenge travels as the CSR's challengePassword,
which many devices encode as a PrintableString, and PrintableString has ``+ / =`` but no ``_``.
A typical challenge is 550-700 characters.

Opening it yields the ``validateRequest`` codes in this order (intune-api.md §5):
ChallengeDecodingError (not base64, too short, unknown version), ChallengeDecryptionError (the GCM tag
does not verify: another emulator's challenge, or tampered), SignatureValidationFailed (not signed by
this emulator's signing key), ChallengeDeserializationError (the signed body is not the JSON above),
then ChallengeInvalidTimestamp (issued in the future or expiring before issue) and ChallengeExpired.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from scep_server.config import EKU_NAMES, KEY_USAGE_NAMES
from scep_server.emulator.codes import Code, Rejection
from scep_server.pki.names import parse_name

SAN_TYPES = ("email", "upn", "dns", "uri")
HASHES = ("sha1", "sha256", "sha384", "sha512")
VERSION = 1
CLOCK_SKEW = 300  # seconds a challenge may claim to be issued in the future
_NONCE = 12
_SIGNATURE = 64
_TAG = 16
_MAX_CHARS = 8192
_MAX_BODY = 64 * 1024
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


def _new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class ChallengeSpec:
    """What a SCEP profile asks of the device (intune-api.md §7, §8).

    ``subject`` is RFC 4514 ("" for a profile without a subject); ``sans`` pairs a type from
    ``SAN_TYPES`` with a value; ``key_usage`` uses ``scep_server.config.KEY_USAGE_NAMES``;
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


@dataclass(frozen=True, slots=True)
class ChallengeClaims:
    """An opened challenge: the profile's spec and its lifetime (unix seconds)."""

    spec: ChallengeSpec
    issued_at: int
    expires_at: int


class ChallengeCodec:
    """Seals and opens challenges with one AES-256-GCM key and one ECDSA P-256 signing key."""

    def __init__(self, aes_key: bytes | None = None, signing_key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self._aead = AESGCM(aes_key if aes_key is not None else AESGCM.generate_key(bit_length=256))
        self._signing_key = signing_key if signing_key is not None else ec.generate_private_key(ec.SECP256R1())

    def seal(
        self, spec: ChallengeSpec, issued_at: float, *, signing_key: ec.EllipticCurvePrivateKey | None = None
    ) -> str:
        """A challenge for ``spec``, issued at ``issued_at`` and expiring ``spec.expires_in`` later."""
        iat = int(issued_at)
        payload = {"v": VERSION, "spec": spec.to_json(), "iat": iat, "exp": iat + spec.expires_in}
        body = zlib.compress(json.dumps(payload, separators=(",", ":")).encode(), 9)
        return self.seal_body(body, signing_key=signing_key)

    def seal_body(self, body: bytes, *, signing_key: ec.EllipticCurvePrivateKey | None = None) -> str:
        """Sign and encrypt an arbitrary body (tests use a foreign ``signing_key`` or a broken body)."""
        key = signing_key if signing_key is not None else self._signing_key
        r, s = decode_dss_signature(key.sign(body, ec.ECDSA(hashes.SHA256())))
        inner = r.to_bytes(32, "big") + s.to_bytes(32, "big") + body
        nonce = os.urandom(_NONCE)
        header = bytes([VERSION])
        return base64.b64encode(header + nonce + self._aead.encrypt(nonce, inner, header)).decode("ascii")

    def open(self, challenge: str) -> ChallengeClaims:
        """Decode, decrypt, verify and parse; raises ``Rejection`` with the matching code."""
        inner = self._decrypt(_decode(challenge))
        signature, body = inner[:_SIGNATURE], inner[_SIGNATURE:]
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        try:
            self._signing_key.public_key().verify(encode_dss_signature(r, s), body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Rejection(Code.SIGNATURE_VALIDATION_FAILED, "the challenge is not signed by Intune") from None
        return _parse_body(body)

    def _decrypt(self, raw: bytes) -> bytes:
        nonce, sealed = raw[1 : 1 + _NONCE], raw[1 + _NONCE :]
        try:
            inner = self._aead.decrypt(nonce, sealed, raw[:1])
        except InvalidTag:
            raise Rejection(Code.CHALLENGE_DECRYPTION_ERROR, "the challenge cannot be decrypted") from None
        if len(inner) <= _SIGNATURE:
            raise Rejection(Code.CHALLENGE_DESERIALIZATION_ERROR, "the challenge carries no payload")
        return inner


def check_lifetime(claims: ChallengeClaims, now: float) -> None:
    """ChallengeInvalidTimestamp / ChallengeExpired against the emulator's clock."""
    if claims.issued_at > now + CLOCK_SKEW or claims.expires_at < claims.issued_at:
        raise Rejection(Code.CHALLENGE_INVALID_TIMESTAMP, "the challenge's timestamps are not valid")
    if now >= claims.expires_at:
        raise Rejection(Code.CHALLENGE_EXPIRED, f"the challenge expired {int(now - claims.expires_at)} s ago")


def _decode(challenge: str) -> bytes:
    if len(challenge) > _MAX_CHARS:
        raise Rejection(Code.CHALLENGE_DECODING_ERROR, "the challenge is too long")
    try:
        raw = base64.b64decode(challenge.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Rejection(Code.CHALLENGE_DECODING_ERROR, "the challenge is not base64") from None
    if len(raw) < 1 + _NONCE + _TAG + _SIGNATURE:
        raise Rejection(Code.CHALLENGE_DECODING_ERROR, "the challenge is too short")
    if raw[0] != VERSION:
        raise Rejection(Code.CHALLENGE_DECODING_ERROR, f"unknown challenge format version {raw[0]}")
    return raw


def _parse_body(body: bytes) -> ChallengeClaims:
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(body, _MAX_BODY)
        payload = json.loads(text)
        if payload.get("v") != VERSION or inflater.unconsumed_tail:
            raise ValueError("unexpected payload version or size")
        spec = ChallengeSpec.from_json(payload["spec"])
        iat, exp = payload["iat"], payload["exp"]
        if not (type(iat) is int and type(exp) is int):
            raise ValueError("iat and exp must be integers")
    except (zlib.error, ValueError, KeyError, TypeError, AttributeError):
        raise Rejection(Code.CHALLENGE_DESERIALIZATION_ERROR, "the challenge payload is not readable") from None
    return ChallengeClaims(spec=spec, issued_at=iat, expires_at=exp)


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
