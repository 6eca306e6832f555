"""The emulator's sealed challenge: a ``ChallengeSpec`` (the Intune contract) signed and encrypted.

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
import zlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from scep_server.emulator.codes import Code, Rejection
from scep_server.intune.contract import ChallengeSpec

VERSION = 1
CLOCK_SKEW = 300  # seconds a challenge may claim to be issued in the future
_NONCE = 12
_SIGNATURE = 64
_TAG = 16
_MAX_CHARS = 8192
_MAX_BODY = 64 * 1024


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
