"""Client side of SCEP (RFC 8894): build pkiMessages, read CertReps and GetCACert/GetCACaps replies.

Pure functions over bytes and x509 objects; the HTTP transport lives in :mod:`scep_server.simulator.http`.
:mod:`.requests` builds what a device sends, :mod:`.replies` checks what the CA answers, and
:mod:`.negotiate` reads the CA's certificates and capabilities to choose the recipient and algorithms.
"""

from __future__ import annotations

from scep_server.scep.client.negotiate import (
    CA_CERT,
    CA_RA_CERT,
    KNOWN_CAPS,
    choose_algorithms,
    parse_caps,
    parse_get_ca_cert,
    pick_recipient,
)
from scep_server.scep.client.replies import CertRep, ScepClientError, parse_cert_rep
from scep_server.scep.client.requests import (
    NONCE_SIZE,
    BuiltRequest,
    build_cert_poll,
    build_csr,
    build_get_cert,
    build_get_crl,
    build_pkcsreq,
    build_pki_request,
    self_signed_signer,
    transaction_id_for,
)

__all__ = [
    "CA_CERT",
    "CA_RA_CERT",
    "KNOWN_CAPS",
    "NONCE_SIZE",
    "BuiltRequest",
    "CertRep",
    "ScepClientError",
    "build_cert_poll",
    "build_csr",
    "build_get_cert",
    "build_get_crl",
    "build_pki_request",
    "build_pkcsreq",
    "choose_algorithms",
    "parse_caps",
    "parse_cert_rep",
    "parse_get_ca_cert",
    "pick_recipient",
    "self_signed_signer",
    "transaction_id_for",
]
