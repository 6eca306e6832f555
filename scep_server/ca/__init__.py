"""Issuing: the CA and its RA, issuance policy and CSR checks, certificates, CRLs and OCSP.

The keys themselves stay in :mod:`scep_server.ca.keys`; everything else holds them as signers.
"""

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
from scep_server.ca.csr import check_csr, describe_sans
from scep_server.ca.issue import build_certificate, thumbprints
from scep_server.ca.keys import Decrypter, RaKey, Signer
from scep_server.ca.policy import IssuancePolicy

__all__ = [
    "CA_CERT",
    "CA_KEY",
    "CHAIN",
    "RA_CERT",
    "RA_KEY",
    "CertificateAuthority",
    "Decrypter",
    "IssuancePolicy",
    "RaKey",
    "Signer",
    "build_certificate",
    "build_crl",
    "ca_exists",
    "check_csr",
    "describe_sans",
    "import_ca",
    "init_ca",
    "load_ca",
    "rotate_ra",
    "thumbprints",
]
