"""Issuing: CA/RA keys and certificates, the certificate builder policy, serials, CRLs."""

from __future__ import annotations

from scep_server.ca.authority import (
    CA_CERT,
    CA_KEY,
    CHAIN,
    RA_CERT,
    RA_KEY,
    CertificateAuthority,
    ca_exists,
    import_ca,
    init_ca,
    load_ca,
    rotate_ra,
)
from scep_server.ca.crl import build_crl
from scep_server.ca.issue import IssuancePolicy, build_certificate, check_csr, describe_sans, thumbprints
from scep_server.ca.keys.file import (
    PrivateKey,
    generate_private_key,
    load_certificates,
    load_private_key,
    save_certificate,
    save_private_key,
)

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CHAIN",
    "RA_CERT",
    "RA_KEY",
    "CertificateAuthority",
    "IssuancePolicy",
    "PrivateKey",
    "build_certificate",
    "build_crl",
    "ca_exists",
    "check_csr",
    "describe_sans",
    "generate_private_key",
    "import_ca",
    "init_ca",
    "load_ca",
    "load_certificates",
    "load_private_key",
    "rotate_ra",
    "save_certificate",
    "save_private_key",
    "thumbprints",
]
