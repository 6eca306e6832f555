"""SCEP vocabulary: message types, statuses, attribute OIDs and algorithm choices (RFC 8894 §3.2)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, IntEnum, StrEnum
from typing import ClassVar

from cryptography.hazmat.primitives import hashes

from scep_server.errors import FailInfo

__all__ = [
    "Attr",
    "ContentCipher",
    "DigestAlgorithm",
    "FailInfo",
    "KeyTransport",
    "MessageType",
    "PKIStatus",
]


class MessageType(IntEnum):
    """messageType attribute values (RFC 8894 §3.2.1.2); sent as a PrintableString of the decimal value."""

    CERT_REP = 3
    RENEWAL_REQ = 17
    PKCS_REQ = 19
    CERT_POLL = 20  # GetCertInitial in older drafts
    GET_CERT = 21
    GET_CRL = 22


class PKIStatus(StrEnum):
    """pkiStatus attribute values (RFC 8894 §3.2.1.3)."""

    SUCCESS = "0"
    FAILURE = "2"
    PENDING = "3"


class Attr(StrEnum):
    """OIDs of the authenticated attributes a pkiMessage carries (RFC 8894 §3.2.1)."""

    CONTENT_TYPE = "1.2.840.113549.1.9.3"
    MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
    SIGNING_TIME = "1.2.840.113549.1.9.5"
    MESSAGE_TYPE = "2.16.840.1.113733.1.9.2"
    PKI_STATUS = "2.16.840.1.113733.1.9.3"
    FAIL_INFO = "2.16.840.1.113733.1.9.4"
    SENDER_NONCE = "2.16.840.1.113733.1.9.5"
    RECIPIENT_NONCE = "2.16.840.1.113733.1.9.6"
    TRANSACTION_ID = "2.16.840.1.113733.1.9.7"
    FAIL_INFO_TEXT = "1.3.6.1.5.5.7.24.1"


class DigestAlgorithm(Enum):
    """Message digests a pkiMessage may be signed with; value = asn1crypto algorithm name."""

    SHA1 = "sha1"
    SHA256 = "sha256"
    SHA384 = "sha384"
    SHA512 = "sha512"

    def hash(self) -> hashes.HashAlgorithm:
        return {
            DigestAlgorithm.SHA1: hashes.SHA1(),
            DigestAlgorithm.SHA256: hashes.SHA256(),
            DigestAlgorithm.SHA384: hashes.SHA384(),
            DigestAlgorithm.SHA512: hashes.SHA512(),
        }[self]


@dataclass(frozen=True, slots=True)
class _CipherSpec:
    asn1_name: str
    key_size: int
    block_size: int


class ContentCipher(Enum):
    """Content-encryption algorithms of the pkcsPKIEnvelope (RFC 8894 §3.5.2); all CBC."""

    DES = _CipherSpec("des", 8, 8)
    DES3 = _CipherSpec("tripledes_3key", 24, 8)
    AES128 = _CipherSpec("aes128_cbc", 16, 16)
    AES192 = _CipherSpec("aes192_cbc", 24, 16)
    AES256 = _CipherSpec("aes256_cbc", 32, 16)

    @property
    def asn1_name(self) -> str:
        return self.value.asn1_name

    @property
    def key_size(self) -> int:
        return self.value.key_size

    @property
    def block_size(self) -> int:
        return self.value.block_size

    @classmethod
    def from_asn1_name(cls, name: str) -> ContentCipher | None:
        return next((c for c in cls if c.asn1_name == name), None)


PKCS1V15_NAME = "rsaes_pkcs1v15"
OAEP_NAME = "rsaes_oaep"


@dataclass(frozen=True, slots=True)
class KeyTransport:
    """How the content-encryption key is wrapped for the recipient (RSA only, RFC 8894 §3.5.2).

    RSAES-PKCS1-v1_5 (RFC 8017 §7.2), or RSAES-OAEP with the hash and MGF1 hash of its parameters
    (RFC 8017 §A.2.1, RFC 4055 §4.1; both SHA-1 when the parameters are the defaults). The label is
    always empty.
    """

    name: str  # asn1crypto algorithm name: "rsaes_pkcs1v15" or "rsaes_oaep"
    oaep_hash: DigestAlgorithm | None = None
    mgf_hash: DigestAlgorithm | None = None

    RSA_PKCS1V15: ClassVar[KeyTransport]
    RSA_OAEP: ClassVar[KeyTransport]  # RSAES-OAEP with the default parameters (SHA-1, MGF1-SHA-1)

    @classmethod
    def oaep(cls, hash: DigestAlgorithm, mgf_hash: DigestAlgorithm | None = None) -> KeyTransport:
        """RSAES-OAEP with ``hash`` and MGF1 over ``mgf_hash`` (default: the same hash)."""
        return cls(OAEP_NAME, hash, mgf_hash or hash)

    @property
    def is_oaep(self) -> bool:
        return self.name == OAEP_NAME


KeyTransport.RSA_PKCS1V15 = KeyTransport(PKCS1V15_NAME)
KeyTransport.RSA_OAEP = KeyTransport.oaep(DigestAlgorithm.SHA1)
