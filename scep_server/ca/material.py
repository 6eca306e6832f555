"""Certificates of the CA itself: the self-signed CA certificate and the RA certificate it issues.

The RA (registration authority) certificate is the one SCEP clients encrypt their requests to and
whose key signs CertRep messages (RFC 8894 §2.1). It is always RSA: Apple clients only encrypt to RSA
recipients, and they pick the recipient by keyUsage keyEncipherment.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from scep_server.ca.keys import Signer
from scep_server.errors import CAError

RA_KEY_BITS = 2048
# A device whose clock runs somewhat slow must still accept a CA or RA created a moment ago.
MATERIAL_BACKDATE = timedelta(hours=1)


def authority_key_identifier(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AKI naming ``ca_cert``'s key: its SKI when it has one, else derived from the key (RFC 5280 §4.2.1.1)."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        pass
    else:
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    public = ca_cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise CAError(f"the CA certificate {ca_cert.subject.rfc4514_string()} has neither an RSA nor an EC key")
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(public)


def self_signed_ca(key: Signer, subject: x509.Name, validity_days: int, now: datetime) -> x509.Certificate:
    """A root CA certificate for ``key``.

    RFC 5280 §4.2.1.9: basicConstraints cA TRUE, critical, no pathLenConstraint; §4.2.1.3: keyUsage
    keyCertSign and cRLSign (digitalSignature too, for signing OCSP responses), critical; §4.2.1.2 and
    §4.2.1.1: SKI from the key, and an AKI equal to it.
    """
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - MATERIAL_BACKDATE)
        .not_valid_after(now + timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    return key.sign_certificate(builder)


def issue_ra(
    ca_cert: x509.Certificate,
    ca_key: Signer,
    ra_key: rsa.RSAPublicKey,
    subject: x509.Name,
    validity_days: int,
    now: datetime,
) -> x509.Certificate:
    """The RA certificate for the public key ``ra_key``, issued by the CA and never outliving it.

    keyUsage digitalSignature (CertRep signatures) and keyEncipherment (request decryption), critical;
    basicConstraints cA FALSE, critical (RFC 5280 §4.2.1.3, §4.2.1.9).
    """
    not_before = max(now - MATERIAL_BACKDATE, ca_cert.not_valid_before_utc)
    not_after = min(now + timedelta(days=validity_days), ca_cert.not_valid_after_utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(ra_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_encipherment=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ra_key), critical=False)
        .add_extension(authority_key_identifier(ca_cert), critical=False)
    )
    return ca_key.sign_certificate(builder)


def _key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )
