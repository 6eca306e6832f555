"""The CA, its RA and its OCSP responder with their keys on a SoftHSM2 token.

``ca.authority.key_backend`` opens the backend ``ca.keys`` names. Most tests here hand the CA code one
``pkcs11`` backend for the token directly; the last goes through the configuration as ``serve`` does.
Either way that is all the CA code needs to keep its keys there: init, load, rotate the RA, import a
CA, sign CRLs and OCSP responses, decrypt envelopes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp

from scep_server.ca import authority, responder
from scep_server.ca.authority import CA_CERT, RA_CERT, import_ca, init_ca, load_ca, rotate_ra
from scep_server.ca.crl import build_crl
from scep_server.ca.keys import KeyBackend, KeyContext, key_matches, open_backend
from scep_server.ca.ocsp import CertId, ResponseTimes, SingleAnswer, parse_request, signed_response
from scep_server.ca.responder import OCSP_CERT, DelegatedResponder, ResponderPolicy
from scep_server.config import CAConfig, KeyBackendConfig
from scep_server.errors import CAError
from scep_server.pki.chain import is_issued_by
from scep_server.pki.names import parse_name
from scep_server.scep import envelope
from scep_server.scep.types import ContentCipher, KeyTransport
from tests.support import pki
from tests.support.softhsm import SoftHsmToken, softhsm_token

NOW = datetime.now(UTC).replace(microsecond=0)
POLICY = ResponderPolicy(parse_name("CN=Token OCSP Responder"), timedelta(days=30))
CONFIGS = {"rsa": CAConfig(key_type="rsa", key_size=2048), "p384": CAConfig(key_type="ec", curve="P-384")}


@pytest.fixture
def token(tmp_path: Path) -> Iterator[SoftHsmToken]:
    with softhsm_token(tmp_path / "softhsm") as made:
        yield made


@pytest.fixture
def keys(token: SoftHsmToken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KeyBackend:
    backend = open_backend(KeyContext(tmp_path / "ca", settings=token.settings()), "pkcs11")

    def on_the_token(
        ca_dir: Path, passphrase: bytes | None, keys: KeyBackendConfig | None = None, *, namespace: str = ""
    ) -> KeyBackend:
        return backend

    monkeypatch.setattr(authority, "key_backend", on_the_token)
    monkeypatch.setattr(responder, "key_backend", on_the_token)
    return backend


def leaf(ca: authority.CertificateAuthority) -> x509.Certificate:
    builder = pki.certificate_builder("CN=device", pki.new_key(pki.KeyType.P256).public_key(), ca.ca_cert.subject,
                                      ca=None, not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30))
    return ca.ca_key.sign_certificate(builder, hashes.SHA256())  # fmt: skip


def cert_id_of(cert: x509.Certificate, issuer: x509.Certificate) -> CertId:
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    return parse_request(request.public_bytes(serialization.Encoding.DER)).cert_ids[0]


def verify_ocsp(der: bytes, responder_cert: x509.Certificate) -> ocsp.OCSPResponse:
    response = ocsp.load_der_ocsp_response(der)
    public = responder_cert.public_key()
    algorithm = response.signature_hash_algorithm
    assert algorithm is not None
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm)
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
    return response


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_a_ca_made_on_the_token_loads_and_signs(keys: KeyBackend, tmp_path: Path, kind: str) -> None:
    ca_dir = tmp_path / "ca"
    made = init_ca(ca_dir, CONFIGS[kind], None, now=NOW)
    assert sorted(path.name for path in ca_dir.iterdir()) == [CA_CERT, RA_CERT]  # no key files: keys are on the token
    assert keys.exists("ca.key") and keys.exists("ra.key")
    ca = load_ca(ca_dir, CONFIGS[kind], None)
    assert ca.ca_cert == made.ca_cert and key_matches(ca.ca_key, ca.ca_cert) and is_issued_by(ca.ra_cert, ca.ca_cert)
    device = leaf(ca)
    assert is_issued_by(device, ca.ca_cert)
    crl = build_crl(ca, [(device.serial_number, NOW, 1)], crl_number=3, now=NOW, validity=timedelta(days=1))
    assert crl.is_signature_valid(ca.ca_cert.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(device.serial_number) is not None
    wrapped = envelope.encrypt(b"the request", ca.ra_cert, ContentCipher.AES128, KeyTransport.RSA_PKCS1V15)
    assert envelope.decrypt(wrapped, ca.ra_key, ca.ra_cert).content == b"the request"


def test_the_ocsp_responder_key_lives_on_the_token(keys: KeyBackend, tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    ca = init_ca(ca_dir, CONFIGS["p384"], None, now=NOW)
    identity = DelegatedResponder(ca_dir, ca, None, POLICY).current()
    assert keys.exists("ocsp.key") and (ca_dir / OCSP_CERT).exists() and is_issued_by(identity.cert, ca.ca_cert)
    assert key_matches(keys.load("ocsp.key"), identity.cert)
    cert_ids = [cert_id_of(leaf(ca), ca.ca_cert), cert_id_of(leaf(ca), ca.ca_cert)]
    times = ResponseTimes(produced_at=NOW, this_update=NOW, next_update=NOW + timedelta(hours=1))
    for count in (1, 2):  # one answer: cryptography's builder; several: asn1crypto
        answers = [SingleAnswer(cert_id, ocsp.OCSPCertStatus.GOOD) for cert_id in cert_ids[:count]]
        response = verify_ocsp(signed_response(answers, identity, times, b"nonce-xyz"), identity.cert)
        assert response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(
            identity.cert.public_key()  # type: ignore[arg-type]
        ).digest
    again = DelegatedResponder(ca_dir, ca, None, POLICY).current()
    assert again.cert == identity.cert  # another process adopts the key on the token and its certificate


def test_rotating_the_ra_replaces_its_key_on_the_token(keys: KeyBackend, tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    old = init_ca(ca_dir, CONFIGS["rsa"], None, now=NOW)
    rotated = rotate_ra(ca_dir, old, CONFIGS["rsa"], None, now=NOW)
    loaded = load_ca(ca_dir, CONFIGS["rsa"], None)
    assert loaded.ra_cert == rotated.ra_cert and loaded.ra_key.public_key() != old.ra_key.public_key()
    assert key_matches(loaded.ra_key, loaded.ra_cert)
    wrapped = envelope.encrypt(b"after rotation", loaded.ra_cert, ContentCipher.AES256, KeyTransport.RSA_OAEP)
    assert envelope.decrypt(wrapped, loaded.ra_key, loaded.ra_cert).content == b"after rotation"


def test_an_imported_ca_key_goes_onto_the_token(keys: KeyBackend, tmp_path: Path) -> None:
    existing = pki.CA.root("CN=Imported CA", key=pki.new_key(pki.KeyType.P384))
    ca_dir = tmp_path / "ca"
    imported = import_ca(ca_dir, CONFIGS["p384"], cert_pem=existing.cert_pem(),
                         key_pem=pki.private_pem(existing.key, b"transfer"), key_password=b"transfer", chain_pem=None,
                         passphrase=None, now=NOW)  # fmt: skip
    assert sorted(path.name for path in ca_dir.iterdir()) == [CA_CERT, RA_CERT]
    loaded = load_ca(ca_dir, CONFIGS["p384"], None)
    assert loaded.ca_cert == imported.ca_cert == existing.cert and key_matches(loaded.ca_key, existing.cert)
    assert is_issued_by(leaf(loaded), existing.cert) and is_issued_by(loaded.ra_cert, existing.cert)


def test_an_import_with_a_foreign_key_leaves_the_token_empty(keys: KeyBackend, tmp_path: Path) -> None:
    existing = pki.CA.root("CN=Imported CA")
    with pytest.raises(CAError, match="does not belong to the CA certificate"):
        import_ca(tmp_path / "ca", CONFIGS["rsa"], cert_pem=existing.cert_pem(),
                  key_pem=pki.private_pem(pki.new_key(pki.KeyType.P256)), key_password=None, chain_pem=None,
                  passphrase=None, now=NOW)  # fmt: skip
    assert not keys.exists("ca.key") and not keys.exists("ra.key")


def test_the_configuration_puts_every_key_on_the_token_and_none_in_the_ca_directory(
    token: SoftHsmToken, tmp_path: Path
) -> None:
    ca_dir = tmp_path / "ca"
    config = CAConfig(key_type="rsa", key_size=2048, keys=KeyBackendConfig("pkcs11", token.settings()))
    created = init_ca(ca_dir, config, None, now=NOW)
    on_token = DelegatedResponder(ca_dir, created, None, POLICY, keys=config.keys).current()
    loaded = load_ca(ca_dir, config, None)
    assert loaded.ca_cert == created.ca_cert and key_matches(loaded.ra_key, loaded.ra_cert)
    assert is_issued_by(on_token.cert, created.ca_cert)
    assert sorted(path.name for path in ca_dir.iterdir() if not path.name.startswith(".")) == sorted(
        [CA_CERT, RA_CERT, OCSP_CERT]
    ), "certificates only: no key file"
    assert authority.ca_exists(ca_dir, config.keys)
    with pytest.raises(CAError, match="pkcs11:"):
        init_ca(tmp_path / "again", config, None, now=NOW)
