"""Signature hashes, signature checks and certificate signing, including legacy SHA-1.

cryptography (>= 45) neither signs nor checks X.509 structures with SHA-1, yet profiles for old devices
may ask for SHA-1 certificate signatures, imported enterprise roots are often SHA-1-signed, and Windows
clients configured for SHA-1 sign their CSRs with it. For those cases the signature itself is still made
and checked by cryptography on the exact to-be-signed bytes; only the re-encoding of a certificate with
a SHA-1 signature algorithm identifier is done with asn1crypto.
"""

from __future__ import annotations

from asn1crypto import algos, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import SignatureAlgorithmOID

from scep_server.ca.keys.file import PrivateKey

SigningHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512
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


def ca_hash(key: PrivateKey) -> SigningHash:
    """The hash a CA key signs its own material with: SHA-384 for P-384, SHA-512 for P-521, else SHA-256."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size >= 521:
            return hashes.SHA512()
        if key.curve.key_size >= 384:
            return hashes.SHA384()
    return hashes.SHA256()


def sign_certificate(builder: x509.CertificateBuilder, key: PrivateKey, hash_name: str) -> x509.Certificate:
    """Sign ``builder`` with ``key`` (RSA PKCS#1 v1.5 or ECDSA) and the named hash."""
    check_hash_name(hash_name)
    if hash_name == "sha1":
        return _resign_sha1(builder.sign(key, hashes.SHA256()), key)
    return builder.sign(key, SIGNING_HASHES[hash_name]())


def _resign_sha1(cert: x509.Certificate, key: PrivateKey) -> x509.Certificate:
    # RFC 3279 §2.2.1 and §2.2.3: sha1WithRSAEncryption parameters are NULL; ecdsa-with-SHA1 has none.
    if isinstance(key, rsa.RSAPrivateKey):
        algorithm = algos.SignedDigestAlgorithm({"algorithm": "sha1_rsa", "parameters": core.Null()})
    else:
        algorithm = algos.SignedDigestAlgorithm({"algorithm": "sha1_ecdsa"})
    tbs = asn1_x509.TbsCertificate.load(cert.tbs_certificate_bytes)
    tbs["signature"] = algorithm
    tbs_der = tbs.dump()
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(tbs_der, padding.PKCS1v15(), hashes.SHA1())
    else:
        signature = key.sign(tbs_der, ec.ECDSA(hashes.SHA1()))
    signed = asn1_x509.Certificate(
        {"tbs_certificate": tbs, "signature_algorithm": algorithm, "signature_value": signature}
    )
    return x509.load_der_x509_certificate(signed.dump())


def is_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s subject names ``cert``'s issuer and its key made ``cert``'s signature."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, TypeError):
        return False
    except (ValueError, UnsupportedAlgorithm):
        # Signature algorithms cryptography will not check on certificates (SHA-1): check by hand.
        return _verify_by_hand(issuer.public_key(), cert)
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    """Whether ``cert`` is signed by its own key under its own name."""
    return is_issued_by(cert, cert)


def csr_signature_valid(csr: x509.CertificateSigningRequest) -> bool:
    """Whether the CSR is signed by the key it carries (proof of possession), SHA-1 included."""
    if csr.is_signature_valid:
        return True
    return _verify_by_hand(csr.public_key(), csr)


def _verify_by_hand(public_key: object, signed: x509.Certificate | x509.CertificateSigningRequest) -> bool:
    try:
        algorithm = signed.signature_hash_algorithm
        if not isinstance(algorithm, hashes.SHA1):
            return False
        data = signed.tbs_certificate_bytes if isinstance(signed, x509.Certificate) else signed.tbs_certrequest_bytes
        oid = signed.signature_algorithm_oid
        if isinstance(public_key, rsa.RSAPublicKey) and oid == SignatureAlgorithmOID.RSA_WITH_SHA1:
            public_key.verify(signed.signature, data, padding.PKCS1v15(), algorithm)
            return True
        parameters = signed.signature_algorithm_parameters
        if isinstance(public_key, rsa.RSAPublicKey) and isinstance(parameters, padding.PSS):
            public_key.verify(signed.signature, data, parameters, algorithm)
            return True
        if isinstance(public_key, ec.EllipticCurvePublicKey) and oid == SignatureAlgorithmOID.ECDSA_WITH_SHA1:
            public_key.verify(signed.signature, data, ec.ECDSA(algorithm))
            return True
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        return False
    return False
