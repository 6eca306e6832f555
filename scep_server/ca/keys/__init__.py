"""The CA's private keys, behind what the rest of the server may do with them: sign and decrypt.

Nothing outside this package holds private key material. The CA, its RA and the OCSP responder are
:class:`Signer` objects (the RA also a :class:`Decrypter`), made by a :class:`KeyBackend` that keeps
the key itself: in an encrypted PEM file (``file``) or on a PKCS#11 token (``pkcs11``). Backends register
under the ``type`` a configuration names them by (:func:`register`, one module per backend), and
:func:`open_backend` builds one. Keys are named like the CA directory's files: ``ca.key``, ``ra.key``,
``ocsp.key``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar, runtime_checkable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509 import ocsp

from scep_server.errors import CAError, ConfigError

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
SigningHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512
DEFAULT_TYPE = "file"
KEY_NAMES = ("ca.key", "ra.key", "ocsp.key")  # the CA's, the RA's and the OCSP responder's


class Signer(Protocol):
    """A CA, RA or OCSP responder key: RSA (PKCS#1 v1.5 signatures) or EC (ECDSA)."""

    def public_key(self) -> PublicKey: ...

    @property
    def signature_hash(self) -> SigningHash:
        """The hash this key signs the CA's own material with (:func:`signature_hash_for`)."""
        ...

    def sign(self, data: bytes, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
        """The raw signature over ``data`` hashed with ``algorithm`` (default :attr:`signature_hash`).

        PKCS#1 v1.5 for RSA, a DER ECDSA-Sig-Value for EC: for CMS SignerInfos and structures built
        with asn1crypto (OCSP responses for several certificates, SHA-1 certificates).
        """
        ...

    def sign_certificate(
        self, builder: x509.CertificateBuilder, algorithm: SigningHash | None = None
    ) -> x509.Certificate: ...

    def sign_crl(self, builder: x509.CertificateRevocationListBuilder) -> x509.CertificateRevocationList: ...

    def sign_ocsp_response(self, builder: ocsp.OCSPResponseBuilder) -> ocsp.OCSPResponse: ...


class Decrypter(Protocol):
    """RSA key transport (RFC 5652 §6.2.1): how the RA unwraps the content key of a request's envelope."""

    def public_key(self) -> rsa.RSAPublicKey: ...

    def decrypt(self, ciphertext: bytes, padding: AsymmetricPadding) -> bytes:
        """The plaintext; ValueError when ``ciphertext`` does not decrypt under ``padding``."""
        ...


@runtime_checkable
class RaKey(Signer, Decrypter, Protocol):
    """The RA's key: it signs CertReps and decrypts requests (RFC 8894 §2.1), so it is RSA."""

    def public_key(self) -> rsa.RSAPublicKey: ...


class Staged(Protocol):
    """A key written under a temporary name: :meth:`commit` puts it in place, :meth:`discard` drops it."""

    def commit(self) -> None: ...

    def discard(self) -> None: ...


class NewKey(Signer, Protocol):
    """A key generated or imported, not stored yet: it signs the certificates that go with it first."""

    def stage(self, name: str) -> Staged: ...


@dataclass(frozen=True, slots=True)
class KeySpec:
    """A key to generate: RSA of ``rsa_bits`` (e = 65537), or EC on ``curve`` (a NIST or SEC name)."""

    key_type: str
    rsa_bits: int = 3072
    curve: str = "P-256"

    @classmethod
    def like(cls, public_key: PublicKey, *, rsa_bits: int) -> KeySpec:
        """A key of the same family: EC on the same curve, else RSA of ``rsa_bits``."""
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            return cls("ec", curve=public_key.curve.name)
        return cls("rsa", rsa_bits=rsa_bits)


class KeyBackend(Protocol):
    """Where a CA directory's keys live; names are ``ca.key``, ``ra.key``, ``ocsp.key``."""

    def describe(self, name: str) -> str:
        """Where the key ``name`` lives (a path, a token object), for messages."""
        ...

    def exists(self, name: str) -> bool: ...

    def load(self, name: str) -> Signer:
        """The stored key ``name``; CAError when it is missing, unreadable or neither RSA nor EC."""
        ...

    def generate(self, spec: KeySpec) -> NewKey: ...

    def adopt(self, data: bytes, password: bytes | None, *, source: str, hint: str) -> NewKey:
        """A key handed over as PEM or DER (``import-ca``); ``hint`` says how to give a missing password."""
        ...

    def check_at_rest(self, action: str, *, allow_unprotected: bool) -> None:
        """ConfigError when ``action`` would keep keys unprotected at rest and that is not allowed."""
        ...

    def destroy(self, name: str) -> None:
        """Remove the key ``name`` for good (a retired RA after its grace period); nothing when absent."""
        ...


@dataclass(frozen=True, slots=True)
class KeyContext:
    """What a backend is opened with: the CA directory, the CA passphrase, and the backend's own section
    of the configuration (``settings``, as read from the file; each backend checks its own keys).

    ``namespace`` tells the keys of one CA generation from another's where the backend is not the
    directory itself (a token): ``""`` for the CA the directory was created with, the generation's label
    and a slash for a CA staged by a rollover."""

    directory: Path
    passphrase: bytes | None = field(default=None, repr=False)
    settings: Mapping[str, object] = field(default_factory=dict, repr=False)
    namespace: str = ""


BackendFactory = Callable[[KeyContext], KeyBackend]
_Factory = TypeVar("_Factory", bound=BackendFactory)
_BACKENDS: dict[str, BackendFactory] = {}


def register(type_name: str) -> Callable[[_Factory], _Factory]:
    """Class decorator: make a backend available under the configuration ``type`` ``type_name``."""

    def add(factory: _Factory) -> _Factory:
        if type_name in _BACKENDS:
            raise ValueError(f"a key backend is already registered as {type_name!r}")
        _BACKENDS[type_name] = factory
        return factory

    return add


def known_types() -> tuple[str, ...]:
    """The registered backend types, sorted."""
    return tuple(sorted(_BACKENDS))


def open_backend(context: KeyContext, type_name: str = DEFAULT_TYPE) -> KeyBackend:
    """The backend ``type_name`` for ``context``; ConfigError naming the known types when there is none."""
    factory = _BACKENDS.get(type_name)
    if factory is None:
        raise ConfigError(f"unknown CA key backend type {type_name!r} (known: {', '.join(known_types())})")
    return factory(context)


def signature_hash_for(public_key: PublicKey) -> SigningHash:
    """SHA-384 for P-384, SHA-512 for P-521, else SHA-256: a signature as strong as the key."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.key_size >= 521:
            return hashes.SHA512()
        if public_key.curve.key_size >= 384:
            return hashes.SHA384()
    return hashes.SHA256()


def key_matches(key: Signer, cert: x509.Certificate) -> bool:
    """Whether ``cert`` certifies the public half of ``key``."""
    return _spki(key.public_key()) == _spki(cert.public_key())


def as_ra_key(key: Signer, where: str) -> RaKey:
    """``key`` as the RA's key; CAError naming ``where`` it lives unless it is RSA and decrypts."""
    if not isinstance(key, RaKey) or not isinstance(key.public_key(), rsa.RSAPublicKey):
        raise CAError(f"{where} is not an RSA key: SCEP clients only encrypt to RSA")
    return key


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


# The built-in backends register themselves on import; they need the names above.
from scep_server.ca.keys import file as _file  # noqa: E402, F401
from scep_server.ca.keys import pkcs11 as _pkcs11  # noqa: E402, F401
