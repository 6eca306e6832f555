"""Who signed a certificate: issuer checks that also accept the SHA-1 signatures cryptography refuses.

cryptography (>= 45) does not check X.509 signatures made with SHA-1, yet profiles for old devices may
ask for SHA-1 certificates, imported enterprise roots are often SHA-1-signed, and Windows clients
configured for SHA-1 sign their CSRs with it. Those signatures are still checked by cryptography's
public-key primitives, on the exact to-be-signed bytes; only the dispatch on the algorithm is done here.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import SignatureAlgorithmOID

__all__ = ["is_issued_by", "is_self_signed", "sha1_signature_valid"]


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
        return sha1_signature_valid(issuer.public_key(), cert)
    return True


def is_self_signed(cert: x509.Certificate) -> bool:
    """Whether ``cert`` is signed by its own key under its own name."""
    return is_issued_by(cert, cert)


def sha1_signature_valid(public_key: object, signed: x509.Certificate | x509.CertificateSigningRequest) -> bool:
    """Whether ``public_key`` made ``signed``'s SHA-1 signature (RSA PKCS#1 v1.5 or PSS, or ECDSA).

    False for any other hash: the callers use it only where cryptography refused the signature.
    """
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
