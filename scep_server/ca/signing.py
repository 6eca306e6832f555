"""Certificate signing with a profile's hash, including legacy SHA-1.

cryptography (>= 45) does not sign X.509 structures with SHA-1, yet profiles for old devices may ask for
SHA-1 certificate signatures. For those the signer still signs the exact to-be-signed bytes; only the
re-encoding of the certificate with a SHA-1 signature algorithm identifier is done with asn1crypto.
Checking SHA-1 signatures is :mod:`scep_server.pki.chain`'s and :mod:`scep_server.pki.csr`'s.
"""

from __future__ import annotations

from asn1crypto import algos, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_server.ca.keys import Signer, SigningHash

SIGNING_HASHES: dict[str, type[SigningHash]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
HASH_NAMES = ("sha1", *SIGNING_HASHES)


def check_hash_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is ``sha1``, ``sha256``, ``sha384`` or ``sha512``."""
    if name not in HASH_NAMES:
        raise ValueError(f"unsupported hash {name!r} (supported: {', '.join(HASH_NAMES)})")


def sign_certificate(builder: x509.CertificateBuilder, signer: Signer, hash_name: str) -> x509.Certificate:
    """Sign ``builder`` with ``signer`` (RSA PKCS#1 v1.5 or ECDSA) and the named hash."""
    check_hash_name(hash_name)
    if hash_name == "sha1":
        return _resign_sha1(signer.sign_certificate(builder, hashes.SHA256()), signer)
    return signer.sign_certificate(builder, SIGNING_HASHES[hash_name]())


def _resign_sha1(cert: x509.Certificate, signer: Signer) -> x509.Certificate:
    # RFC 3279 §2.2.1 and §2.2.3: sha1WithRSAEncryption parameters are NULL; ecdsa-with-SHA1 has none.
    if isinstance(signer.public_key(), rsa.RSAPublicKey):
        algorithm = algos.SignedDigestAlgorithm({"algorithm": "sha1_rsa", "parameters": core.Null()})
    else:
        algorithm = algos.SignedDigestAlgorithm({"algorithm": "sha1_ecdsa"})
    tbs = asn1_x509.TbsCertificate.load(cert.tbs_certificate_bytes)
    tbs["signature"] = algorithm
    signature = signer.sign(tbs.dump(), hashes.SHA1())
    signed = asn1_x509.Certificate(
        {"tbs_certificate": tbs, "signature_algorithm": algorithm, "signature_value": signature}
    )
    return x509.load_der_x509_certificate(signed.dump())
