"""Building blocks for the emulator tests: CSRs from a ChallengeSpec, certificates, Intune call headers."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from asn1crypto import algos
from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import AttributeOID
from flask.testing import FlaskClient

from scep_server.intune.contract import ChallengeSpec
from scep_server.pki.names import parse_name
from scep_server.pki.sans import UPN_OID
from tests.support import pki

BASE = "http://localhost"
INTUNE_SCOPE = f"{BASE}/intune-api/.default"
GRAPH_SCOPE = f"{BASE}/graph/.default"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
SECRET = "s3cret-value"
KEY_USAGE_FLAGS = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                   "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
UNSET: Any = object()


def build_csr(
    key: CertificateIssuerPrivateKeyTypes,
    *,
    subject: str = "",
    sans: Sequence[tuple[str, str]] = (),
    key_usage: Sequence[str] | None = (),
    ekus: Sequence[str] | None = (),
    challenge: str | None = None,
    challenge_tag: _ASN1Type | None = None,
    hash_name: str = "sha256",
) -> str:
    """A base64 DER CSR; ``key_usage`` None leaves the extension out, and so do empty ``ekus``."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(parse_name(subject) if subject else x509.Name([]))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([_general_name(*s) for s in sans]), critical=False)
    if key_usage is not None:
        flags = {flag: flag in key_usage for flag in KEY_USAGE_FLAGS}
        builder = builder.add_extension(x509.KeyUsage(**flags), critical=True)
    if ekus:  # an empty ExtendedKeyUsage is not valid DER: no EKU means no extension
        builder = builder.add_extension(x509.ExtendedKeyUsage([x509.ObjectIdentifier(e) for e in ekus]), critical=False)
    if challenge is not None:
        value = challenge.encode("utf-16-be" if challenge_tag is _ASN1Type.BMPString else "utf-8")
        builder = builder.add_attribute(AttributeOID.CHALLENGE_PASSWORD, value, _tag=challenge_tag)
    csr = builder.sign(key, hashes.SHA256() if hash_name == "sha1" else _hash(hash_name))
    der = csr.public_bytes(serialization.Encoding.DER)
    if hash_name == "sha1":
        assert isinstance(key, rsa.RSAPrivateKey)
        der = _resign_sha1(der, key)
    return base64.b64encode(der).decode()


def csr_for(spec: ChallengeSpec, key: CertificateIssuerPrivateKeyTypes, challenge: str | None, **changes: Any) -> str:
    """A CSR that asks exactly for what ``spec`` asks, except for ``changes`` (build_csr's arguments)."""
    values: dict[str, Any] = {"subject": spec.subject, "sans": spec.sans, "key_usage": spec.key_usage,
                              "ekus": spec.extended_key_usage, "challenge": challenge, "hash_name": spec.hash}
    values.update(changes)
    return build_csr(key, **values)


def self_signed(key: rsa.RSAPrivateKey, name: str = "app credential") -> x509.Certificate:
    now = datetime.now(UTC)
    return pki.self_signed(name, key, not_before=now - timedelta(minutes=1), not_after=now + timedelta(days=1))


def pem_key(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def pem_cert(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def intune_headers(
    token: str | None, api_version: str | None = "2018-02-20", **overrides: str | None
) -> dict[str, str]:
    headers: dict[str, str | None] = {"Authorization": f"Bearer {token}" if token else None, "api-version": api_version,
                                      "client-request-id": str(uuid.uuid4()), "UserAgent": "scep-server/test"}
    headers.update(overrides)
    return {k: v for k, v in headers.items() if v is not None}


def validate_body(csr_b64: str, transaction_id: str = "tid-1") -> dict[str, Any]:
    return {"request": {"transactionId": transaction_id, "certificateRequest": csr_b64,
                        "callerInfo": "scep-server/test"}}


def success_body(transaction_id: str = "tid-1", **changes: Any) -> dict[str, Any]:
    notification = {"transactionId": transaction_id, "certificateRequest": "MIIB", "certificateThumbprint": "ab" * 20,
                    "certificateSerialNumber": "01AF", "certificateExpirationDateUtc": "2027-06-11T16:11:20.0904778Z",
                    "issuingCertificateAuthority": "CN=scep-server Dev CA,O=scep-server",
                    "callerInfo": "scep-server/test", "caConfiguration": "", "certificateAuthority": ""}
    notification.update(changes)
    return {"notification": {k: v for k, v in notification.items() if v is not UNSET}}


def failure_body(transaction_id: str = "tid-1", **changes: Any) -> dict[str, Any]:
    notification = {"transactionId": transaction_id, "certificateRequest": "MIIB", "hResult": 0x80004005,
                    "errorDescription": "issuance failed", "callerInfo": "scep-server/test"}
    notification.update(changes)
    return {"notification": {k: v for k, v in notification.items() if v is not UNSET}}


def _general_name(kind: str, value: str) -> x509.GeneralName:
    if kind == "email":
        return x509.RFC822Name(value)
    if kind == "dns":
        return x509.DNSName(value)
    if kind == "uri":
        return x509.UniformResourceIdentifier(value)
    encoded = value.encode()
    return x509.OtherName(UPN_OID, bytes([0x0C, len(encoded)]) + encoded)


def _hash(name: str) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    algorithms: dict[str, hashes.SHA256 | hashes.SHA384 | hashes.SHA512] = {
        "sha256": hashes.SHA256(), "sha384": hashes.SHA384(), "sha512": hashes.SHA512()}
    return algorithms[name]


def _resign_sha1(der: bytes, key: rsa.RSAPrivateKey) -> bytes:
    # cryptography no longer signs with SHA-1; devices still do (Intune's profile offers it).
    request = asn1_csr.CertificationRequest.load(der)
    info = request["certification_request_info"]
    signature = key.sign(info.dump(), padding.PKCS1v15(), hashes.SHA1())
    algorithm = algos.SignedDigestAlgorithm({"algorithm": "sha1_rsa"})
    resigned = asn1_csr.CertificationRequest({"certification_request_info": info, "signature_algorithm": algorithm,
                                              "signature": signature})
    return bytes(resigned.dump())


def token(client: FlaskClient, scope: str = INTUNE_SCOPE, client_id: str = CLIENT_ID, secret: str = SECRET) -> str:
    response = client.post("/contoso.onmicrosoft.com/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": scope})
    assert response.status_code == 200, response.json
    assert response.json is not None
    return str(response.json["access_token"])
