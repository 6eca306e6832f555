"""Proof of possession: whether a PKCS#10 request is signed by the key it carries (RFC 2986 §3)."""

from __future__ import annotations

from cryptography import x509

from scep_server.pki.chain import sha1_signature_valid

__all__ = ["csr_signature_valid"]


def csr_signature_valid(csr: x509.CertificateSigningRequest) -> bool:
    """Whether the CSR is signed by the key it carries, SHA-1 included (Windows clients set to SHA-1)."""
    if csr.is_signature_valid:
        return True
    return sha1_signature_valid(csr.public_key(), csr)
