"""Throw-away key material for the fuzz targets, made once per process with scep-server's own CA code.

The SCEP CA is RSA (the RA decrypts the envelopes); the OCSP CA is P-256 so that signing an answer
costs little. Both live in a temporary directory removed when the process exits, or in the directory
given to :func:`keep_in`. The store behind the OCSP responder is an in-memory stand-in: the serial
number alone decides the status.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from scep_server.ca.authority import CertificateAuthority, ca_exists, init_ca, load_ca
from scep_server.ca.responder import DelegatedResponder, responder_policy
from scep_server.config import CAConfig
from scep_server.scep import client
from scep_server.service.ocsp import OcspResponder
from scep_server.service.publishing import RevocationWatch
from scep_server.store import CertificateRecord, CertStatus, Store

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # issue and revocation time of every stand-in record


@dataclass(frozen=True, slots=True)
class Device:
    """A SCEP client: its RSA key and the self-signed certificate that signs its pkiMessages."""

    key: rsa.RSAPrivateKey
    signer: x509.Certificate


_HOME: list[Path] = []  # set by keep_in(); empty: a temporary directory
_WORKDIRS: list[tempfile.TemporaryDirectory[str]] = []  # each removed when the interpreter exits


def keep_in(directory: Path) -> None:
    """Keep the CAs in ``directory`` (made, or reused when it holds them), so a corpus stays decryptable
    from one run to the next. Call before any material is used."""
    if _HOME or _workdir.cache_info().currsize:
        raise RuntimeError("the fuzz material is already in use")
    _HOME.append(directory)


@cache
def _workdir() -> Path:
    if _HOME:
        _HOME[0].mkdir(parents=True, exist_ok=True)
        return _HOME[0]
    holder = tempfile.TemporaryDirectory(prefix="scep-fuzz-")
    _WORKDIRS.append(holder)
    return Path(holder.name)


def _ca(name: str, config: CAConfig) -> CertificateAuthority:
    directory = _workdir() / name
    if ca_exists(directory):
        return load_ca(directory, config, None)
    return init_ca(directory, config, None)


@cache
def scep_ca() -> CertificateAuthority:
    """An RSA-2048 CA and its RA, as ``scep-server init`` makes them."""
    return _ca("scep-ca", CAConfig(key_type="rsa", key_size=2048))


@cache
def device() -> Device:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz device")])
    return Device(key, client.self_signed_signer(key, name))


@cache
def ocsp_ca() -> CertificateAuthority:
    return _ca("ocsp-ca", CAConfig(key_type="ec", curve="P-256"))


@cache
def ocsp_responder() -> OcspResponder:
    """The server's OCSP responder over the P-256 CA, its delegated signer and the stand-in store."""
    ca = ocsp_ca()
    config = CAConfig()
    policy = responder_policy(config.ocsp_subject, config.ocsp_validity_days)
    delegated = DelegatedResponder(_workdir() / "ocsp-ca", ca, None, policy)
    store = cast(Store, SerialStore(ca))
    return OcspResponder(ca, store, delegated, RevocationWatch(store))


class SerialStore:
    """What OcspResponder asks a Store, answered from the serial: 3k unknown, 3k+1 good, 3k+2 revoked."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self._issuer = ca.issuer_name
        self._der = ca.ca_cert.public_bytes(Encoding.DER)

    def count_certificates(self, *, status: CertStatus | None = None) -> int:
        return 0

    def get_certificate(self, serial: int, issuer: str | None = None) -> CertificateRecord | None:
        if serial % 3 == 0 or issuer not in (None, self._issuer):
            return None
        revoked = serial % 3 == 2
        return CertificateRecord(
            serial=serial, issuer=self._issuer, subject="CN=fuzz", sans=(), not_before=EPOCH,
            not_after=EPOCH.replace(year=2036), profile="fuzz", transaction_id=None, requester_ip=None,
            der=self._der, sha1_thumbprint="00", sha256_thumbprint="00",
            status=CertStatus.REVOKED if revoked else CertStatus.VALID, issued_at=EPOCH,
            revoked_at=EPOCH if revoked else None, revocation_reason=serial % 11 if revoked else None,
        )  # fmt: skip

