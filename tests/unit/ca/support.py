"""What the CA unit tests share: a fixed time, the CA key types the tests run over, CSR and OCSP helpers."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_server.ca.authority import CertificateAuthority, key_backend
from scep_server.ca.csr import UPN_OID
from scep_server.ca.keys import NewKey
from scep_server.ca.keys.generate import PrivateKey, generate_private_key
from scep_server.ca.policy import IssuancePolicy
from scep_server.ca.responder import ResponderPolicy, new_responder_key
from scep_server.config import CAConfig, ProfileConfig
from scep_server.pki.names import parse_name

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CA_KINDS = {
    "rsa2048": CAConfig(key_type="rsa", key_size=2048),
    "rsa3072": CAConfig(key_type="rsa", key_size=3072),
    "p256": CAConfig(key_type="ec", curve="P-256"),
    "p384": CAConfig(key_type="ec", curve="P-384"),
}
# OCSP runs over one RSA size: another would add minutes and no coverage.
OCSP_CA_KINDS = {kind: CA_KINDS[kind] for kind in ("rsa2048", "p256", "p384")}
POLICY = ResponderPolicy(parse_name("CN=Test OCSP Responder"), timedelta(days=30))
UNSTORED = key_backend(Path("unused"), None)  # the keys made here are never stored
_KEYS: dict[str, PrivateKey] = {}


def responder_key(ca: CertificateAuthority) -> NewKey:
    return new_responder_key(UNSTORED, ca)


def leaf_key(kind: str = "rsa") -> PrivateKey:
    if kind not in _KEYS:
        if kind.startswith("rsa"):
            _KEYS[kind] = rsa.generate_private_key(65537, int(kind[3:] or 2048))
        else:
            _KEYS[kind] = generate_private_key("ec", curve=kind)
    return _KEYS[kind]


def policy(**changes: Any) -> IssuancePolicy:
    base = IssuancePolicy.from_profile(ProfileConfig(), crl_url=None, ca_issuers_url=None)
    return dataclasses.replace(base, **changes)


def upn(text: str) -> x509.OtherName:
    return x509.OtherName(UPN_OID, core.UTF8String(text).dump())


def make_csr(
    key: Any = None,
    subject: str = "CN=device-1,O=Example",
    sans: list[x509.GeneralName] | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    algorithm: str | None = "sha256",
) -> x509.CertificateSigningRequest:
    key = leaf_key() if key is None else key
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name.from_rfc4514_string(subject))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(key, hashes.SHA256() if algorithm else None)
