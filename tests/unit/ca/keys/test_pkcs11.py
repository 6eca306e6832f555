"""The ``pkcs11`` key backend against a real token: a fresh SoftHSM2 token per test.

Everything the token signs is checked with cryptography under the token key's public key; content
keys are encrypted with cryptography and decrypted on the token.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from pkcs11 import Attribute, ObjectClass

from scep_server.ca.certfiles import replace_pair
from scep_server.ca.keys import (
    KeyBackend,
    KeyContext,
    KeySpec,
    NewKey,
    PublicKey,
    RaKey,
    Signer,
    as_ra_key,
    key_matches,
    known_types,
    open_backend,
    pkcs11_key,
)
from scep_server.ca.keys.pkcs11 import Pkcs11Backend, close_sessions
from scep_server.ca.keys.pkcs11_session import TokenAddress, TokenSession, token_session
from scep_server.ca.material import self_signed_ca
from scep_server.ca.signing import sign_certificate
from scep_server.config import SecretSource
from scep_server.errors import CAError, ConfigError
from tests.support import pki
from tests.support.softhsm import SoftHsmToken, softhsm_token

from .support import cached_key

NOW = datetime.now(UTC).replace(microsecond=0)
SPECS = {
    "rsa2048": KeySpec("rsa", rsa_bits=2048),
    "rsa3072": KeySpec("rsa", rsa_bits=3072),
    "p256": KeySpec("ec", curve="P-256"),
    "p384": KeySpec("ec", curve="P-384"),
}
RSA = SPECS["rsa2048"]
OAEP_PADDINGS = {
    "oaep-sha1": padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None),
    "oaep-sha256": padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None),
    "oaep-sha256-mgf1-sha1": padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA256(), None),
}


@pytest.fixture
def token(tmp_path: Path) -> Iterator[SoftHsmToken]:
    with softhsm_token(tmp_path / "softhsm") as made:
        yield made


def open_pkcs11(token: SoftHsmToken, directory: Path, **overrides: object) -> KeyBackend:
    return open_backend(KeyContext(directory, settings=token.settings(**overrides)), "pkcs11")


@pytest.fixture
def backend(token: SoftHsmToken, tmp_path: Path) -> KeyBackend:
    return open_pkcs11(token, tmp_path)


def stored(backend: KeyBackend, spec: KeySpec, name: str = "ca.key") -> Signer:
    backend.generate(spec).stage(name).commit()
    return backend.load(name)


def verify(public_key: PublicKey, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm) -> None:
    if isinstance(public_key, rsa.RSAPublicKey):
        public_key.verify(signature, data, padding.PKCS1v15(), algorithm)
    else:
        public_key.verify(signature, data, ec.ECDSA(algorithm))


def on_token(token: SoftHsmToken, template: dict[Attribute, Any]) -> list[dict[Attribute, Any]]:
    """The label, id and protection flags of every object matching ``template``, read in the backend's session."""
    wanted = [Attribute.CLASS, Attribute.LABEL, Attribute.ID, Attribute.TOKEN]
    flags = [Attribute.SENSITIVE, Attribute.EXTRACTABLE, Attribute.SIGN, Attribute.DECRYPT]

    def read(session: pkcs11.Session) -> list[dict[Attribute, Any]]:
        found = []
        for obj in session.get_objects(template):
            names = wanted + (flags if obj[Attribute.CLASS] == ObjectClass.PRIVATE_KEY else [])
            found.append({name: obj[name] for name in names})
        return found

    return session_of(token).run(read)


def session_of(token: SoftHsmToken) -> TokenSession:
    """The process's session on ``token``: the one the backends use."""
    return token_session(TokenAddress(token.module, token_label=token.label), token.pin)


def private_keys(token: SoftHsmToken) -> list[dict[Attribute, Any]]:
    return on_token(token, {Attribute.CLASS: ObjectClass.PRIVATE_KEY})


def labels(token: SoftHsmToken) -> list[str]:
    return sorted(obj[Attribute.LABEL] for obj in on_token(token, {}))


# --- the backend and the Protocols ------------------------------------------------------------------


def test_pkcs11_is_a_registered_backend(backend: KeyBackend) -> None:
    assert "pkcs11" in known_types() and isinstance(backend, Pkcs11Backend)


def test_a_token_key_passes_the_protocol_checks_the_file_backend_does(backend: KeyBackend) -> None:
    new: NewKey = backend.generate(RSA)
    new.stage("ra.key").commit()
    loaded = backend.load("ra.key")
    assert isinstance(loaded, RaKey) and isinstance(new, RaKey)
    ra = as_ra_key(loaded, backend.describe("ra.key"))
    assert ra.public_key().key_size == 2048 and key_matches(ra, self_signed_ca(ra, pki.name("CN=RA"), 1, NOW))


def test_an_ec_token_key_is_no_ra_key(backend: KeyBackend) -> None:
    key = stored(backend, SPECS["p256"], "ra.key")
    with pytest.raises(CAError, match=r"is not an RSA key: SCEP clients only encrypt to RSA"):
        as_ra_key(key, backend.describe("ra.key"))
    with pytest.raises(TypeError, match="cannot decrypt"):
        key.decrypt(b"x" * 64, padding.PKCS1v15())  # type: ignore[attr-defined]


def test_keys_on_a_token_are_protected_at_rest(backend: KeyBackend) -> None:
    backend.check_at_rest("serve", allow_unprotected=False)  # no passphrase needed: nothing to refuse


def test_describe_gives_an_rfc7512_uri(token: SoftHsmToken, tmp_path: Path) -> None:
    assert open_pkcs11(token, tmp_path).describe("ca.key") == f"pkcs11:token={token.label};object=ca.key;type=private"
    configured = open_pkcs11(token, tmp_path, objects={"ra.key": {"label": "RA key/ä", "id": "0a:1B"}})
    expected = f"pkcs11:token={token.label};object=RA%20key%2F%C3%A4;id=%0A%1B;type=private"
    assert configured.describe("ra.key") == expected
    by_slot = open_pkcs11(token, tmp_path, token_label=None, slot=7)
    assert by_slot.describe("ocsp.key") == "pkcs11:slot-id=7;object=ocsp.key;type=private"


# --- generate, load, sign -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(SPECS))
def test_a_generated_key_is_stored_on_the_token_and_signs(backend: KeyBackend, token: SoftHsmToken, kind: str) -> None:
    spec = SPECS[kind]
    new = backend.generate(spec)
    new.stage("ca.key").commit()
    key = backend.load("ca.key")
    public = key.public_key()
    assert public == new.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        assert spec.key_type == "rsa" and public.key_size == spec.rsa_bits and public.public_numbers().e == 65537
    else:
        assert spec.key_type == "ec" and public.curve.name == {"P-256": "secp256r1", "P-384": "secp384r1"}[spec.curve]
    expected_hash = "sha384" if spec.curve == "P-384" and spec.key_type == "ec" else "sha256"
    assert key.signature_hash.name == expected_hash
    for algorithm in (None, hashes.SHA1(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
        verify(public, key.sign(b"to be signed", algorithm), b"to be signed", algorithm or key.signature_hash)
    with pytest.raises(InvalidSignature):
        verify(public, key.sign(b"to be signed"), b"other data", key.signature_hash)
    [private] = private_keys(token)
    assert private[Attribute.LABEL] == "ca.key" and private[Attribute.TOKEN] is True
    assert private[Attribute.SENSITIVE] is True and private[Attribute.EXTRACTABLE] is False
    assert private[Attribute.SIGN] is True and private[Attribute.DECRYPT] is (spec.key_type == "rsa")


def test_an_unsupported_hash_is_a_value_error(backend: KeyBackend) -> None:
    key = stored(backend, SPECS["p256"])
    with pytest.raises(ValueError, match="sha3-256"):
        key.sign(b"data", hashes.SHA3_256())


@pytest.mark.parametrize("kind", ["rsa2048", "p256", "p384"])
def test_a_certificate_signed_on_the_token_verifies(backend: KeyBackend, kind: str) -> None:
    ca_key = stored(backend, SPECS[kind])
    ca_cert = self_signed_ca(ca_key, pki.name("CN=Token CA"), 30, NOW)
    ca_cert.verify_directly_issued_by(ca_cert)
    assert key_matches(ca_key, ca_cert)
    leaf = pki.certificate_builder("CN=leaf", cached_key("rsa").public_key(), issuer=ca_cert.subject)
    for hash_name in ("sha1", "sha256", "sha384", "sha512"):
        cert = sign_certificate(leaf, ca_key, hash_name)
        assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == hash_name
        verify(ca_key.public_key(), cert.signature, cert.tbs_certificate_bytes, cert.signature_hash_algorithm)


@pytest.mark.parametrize("kind", ["rsa2048", "p384"])
def test_a_crl_signed_on_the_token_verifies(backend: KeyBackend, kind: str) -> None:
    ca_key = stored(backend, SPECS[kind])
    revoked = x509.RevokedCertificateBuilder().serial_number(77).revocation_date(NOW).build()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(pki.name("CN=Token CA"))
        .last_update(NOW)
        .next_update(NOW + timedelta(days=7))
        .add_revoked_certificate(revoked)
    )
    crl = ca_key.sign_crl(builder)
    assert crl.is_signature_valid(ca_key.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(77) is not None


@pytest.mark.parametrize("kind", ["rsa2048", "p256"])
def test_an_ocsp_response_signed_on_the_token_verifies(backend: KeyBackend, kind: str) -> None:
    key = stored(backend, SPECS[kind], "ocsp.key")
    responder = self_signed_ca(key, pki.name("CN=Token OCSP"), 30, NOW)
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(b"\x01" * 20, b"\x02" * 20, 5, hashes.SHA1(), ocsp.OCSPCertStatus.REVOKED, NOW,
                              NOW + timedelta(hours=1), NOW - timedelta(days=1), x509.ReasonFlags.key_compromise)
        .responder_id(ocsp.OCSPResponderEncoding.HASH, responder)
        .certificates([responder])
    )  # fmt: skip
    response = key.sign_ocsp_response(builder)
    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED and response.certificates == [responder]
    assert response.responder_key_hash == x509.SubjectKeyIdentifier.from_public_key(key.public_key()).digest
    assert response.signature_hash_algorithm is not None
    verify(key.public_key(), response.signature, response.tbs_response_bytes, response.signature_hash_algorithm)


# --- decrypt ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pkcs1v15", "oaep-sha1"])
def test_the_token_decrypts_a_content_key(backend: KeyBackend, name: str) -> None:
    ra = as_ra_key(stored(backend, RSA, "ra.key"), "ra.key")
    chosen = padding.PKCS1v15() if name == "pkcs1v15" else OAEP_PADDINGS[name]
    for content_key in (os.urandom(16), os.urandom(32)):
        assert ra.decrypt(ra.public_key().encrypt(content_key, chosen), chosen) == content_key


def does_oaep_with_sha2(token: SoftHsmToken) -> bool:
    """SoftHSM before 2.7 takes CKM_RSA_PKCS_OAEP with SHA-1 and MGF1-SHA-1 only (CKR_ARGUMENTS_BAD else)."""
    return pkcs11.lib(token.module).library_version >= (2, 7)


@pytest.mark.parametrize("name", ["oaep-sha256", "oaep-sha256-mgf1-sha1"])
def test_oaep_with_sha2_decrypts_where_the_token_does_it(
    backend: KeyBackend, token: SoftHsmToken, name: str, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pkcs11_key, "_warned_unsupported", set())
    ra = as_ra_key(stored(backend, RSA, "ra.key"), "ra.key")
    chosen = OAEP_PADDINGS[name]
    content_key = os.urandom(32)
    wrapped = ra.public_key().encrypt(content_key, chosen)
    if does_oaep_with_sha2(token):
        assert ra.decrypt(wrapped, chosen) == content_key
        return
    for _ in range(2):
        with pytest.raises(ValueError, match="could not decrypt"):
            ra.decrypt(wrapped, chosen)
    said = [record.getMessage() for record in caplog.records if "does not decrypt" in record.getMessage()]
    mgf_hash = "sha1" if name.endswith("mgf1-sha1") else "sha256"
    assert said == [f"{backend.describe('ra.key')} does not decrypt RSAES-OAEP with sha256 and MGF1-{mgf_hash} "
                    "(ArgumentsBad): envelopes that use it are rejected"]  # once, however many envelopes use it


def test_a_ciphertext_that_does_not_decrypt_is_a_value_error(backend: KeyBackend) -> None:
    ra = as_ra_key(stored(backend, RSA, "ra.key"), "ra.key")
    wrapped = ra.public_key().encrypt(os.urandom(16), OAEP_PADDINGS["oaep-sha256"])
    with pytest.raises(ValueError):
        ra.decrypt(wrapped, OAEP_PADDINGS["oaep-sha1"])  # encrypted under another OAEP hash
    with pytest.raises(ValueError):
        ra.decrypt(os.urandom(256), padding.PKCS1v15())
    with pytest.raises(ValueError, match="cannot decrypt with EMSA-PSS"):
        ra.decrypt(wrapped, padding.PSS(padding.MGF1(hashes.SHA256()), 32))


def test_an_envelope_for_the_token_ra_decrypts(backend: KeyBackend) -> None:
    from scep_server.scep import envelope
    from scep_server.scep.types import ContentCipher, KeyTransport

    ra = as_ra_key(stored(backend, RSA, "ra.key"), "ra.key")
    ra_cert = self_signed_ca(ra, pki.name("CN=Token RA"), 30, NOW)
    for transport in (KeyTransport.RSA_PKCS1V15, KeyTransport.RSA_OAEP):
        der = envelope.encrypt(b"the CSR", ra_cert, ContentCipher.AES256, transport)
        decrypted = envelope.decrypt(der, ra, ra_cert)
        assert (decrypted.content, decrypted.problem) == (b"the CSR", None)


# --- stage, commit, discard ---------------------------------------------------------------------------


def test_a_new_key_takes_its_name_only_on_commit(backend: KeyBackend, token: SoftHsmToken) -> None:
    old = stored(backend, SPECS["p256"])
    new = backend.generate(SPECS["p256"])
    staged = new.stage("ca.key")
    assert backend.load("ca.key").public_key() == old.public_key()
    assert [label for label in labels(token) if label != "ca.key"] == [label for label in labels(token)
                                                                        if label.startswith("pending.")]  # fmt: skip
    staged.commit()
    assert backend.load("ca.key").public_key() == new.public_key()
    assert labels(token) == ["ca.key", "ca.key", "ca.key.previous", "ca.key.previous"]
    verify(old.public_key(), old.sign(b"still"), b"still", hashes.SHA256())  # the replaced key still signs
    verify(new.public_key(), new.sign(b"renamed"), b"renamed", hashes.SHA256())  # and the new one after its rename


def test_only_one_previous_key_is_kept(backend: KeyBackend, token: SoftHsmToken) -> None:
    first = stored(backend, SPECS["p256"])
    stored(backend, SPECS["p256"])
    third = stored(backend, SPECS["p256"])
    assert labels(token) == ["ca.key", "ca.key", "ca.key.previous", "ca.key.previous"]
    assert backend.load("ca.key").public_key() == third.public_key()
    with pytest.raises(CAError, match="no longer holds the key this process loaded"):
        first.sign(b"gone")


def test_a_discarded_key_leaves_nothing_on_the_token(backend: KeyBackend, token: SoftHsmToken) -> None:
    old = stored(backend, SPECS["p256"])
    backend.generate(SPECS["p256"]).stage("ca.key").discard()
    backend.generate(RSA).stage("ocsp.key").discard()
    assert labels(token) == ["ca.key", "ca.key"] and not backend.exists("ocsp.key")
    assert backend.load("ca.key").public_key() == old.public_key()


def test_replace_pair_keeps_the_old_key_when_the_certificate_cannot_be_written(
    backend: KeyBackend, token: SoftHsmToken, tmp_path: Path
) -> None:
    old = stored(backend, SPECS["p256"], "ocsp.key")
    new = backend.generate(SPECS["p256"])
    cert = self_signed_ca(new, pki.name("CN=new"), 1, NOW)
    with pytest.raises(CAError):
        replace_pair(new, "ocsp.key", tmp_path / "missing-dir" / "ocsp.pem", cert)
    assert backend.load("ocsp.key").public_key() == old.public_key()
    assert labels(token) == ["ocsp.key", "ocsp.key"]
    with pytest.raises(CAError, match="no longer on the token"):  # the discarded key is gone for good
        replace_pair(new, "ocsp.key", tmp_path / "ocsp.pem", cert)
    assert backend.load("ocsp.key").public_key() == old.public_key()
    again = backend.generate(SPECS["p256"])
    cert = self_signed_ca(again, pki.name("CN=new"), 1, NOW)
    replace_pair(again, "ocsp.key", tmp_path / "ocsp.pem", cert)
    assert backend.load("ocsp.key").public_key() == cert.public_key()


def test_configured_labels_and_ids_name_the_keys(token: SoftHsmToken, tmp_path: Path) -> None:
    objects = {"ca.key": {"label": "issuing ca", "id": "c0:01"}, "ra.key": {"label": "scep ra"}}
    keys = open_pkcs11(token, tmp_path, objects=objects)
    ca = stored(keys, SPECS["p256"], "ca.key")
    stored(keys, RSA, "ra.key")
    found = {obj[Attribute.LABEL]: obj[Attribute.ID] for obj in private_keys(token)}
    assert found["issuing ca"] == b"\xc0\x01" and len(found["scep ra"]) == 16
    assert keys.exists("ca.key") and not open_pkcs11(token, tmp_path).exists("ca.key")
    assert open_pkcs11(token, tmp_path, objects={"ca.key": {"label": "issuing ca"}}).load("ca.key").public_key() \
        == ca.public_key()
    with pytest.raises(CAError, match="no such private key"):
        open_pkcs11(token, tmp_path, objects={"ca.key": {"label": "issuing ca", "id": "c0:02"}}).load("ca.key")


# --- adopt --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rsa", "P-384"])
def test_an_adopted_key_is_imported_onto_the_token(backend: KeyBackend, token: SoftHsmToken, kind: str) -> None:
    original = cached_key(kind)
    adopted = backend.adopt(pki.private_pem(original, b"import pw"), b"import pw", source="the CA key", hint="give it")
    assert adopted.public_key() == original.public_key() and not backend.exists("ca.key")
    adopted.stage("ca.key").commit()
    [private] = private_keys(token)
    assert private[Attribute.LABEL] == "ca.key" and private[Attribute.SENSITIVE] is True
    assert private[Attribute.EXTRACTABLE] is False and private[Attribute.DECRYPT] is (kind == "rsa")
    key = backend.load("ca.key")
    assert key.public_key() == original.public_key()
    cert = self_signed_ca(key, pki.name("CN=Imported CA"), 30, NOW)
    cert.verify_directly_issued_by(cert)
    if kind == "rsa":
        ra = as_ra_key(key, "ca.key")
        assert ra.decrypt(original.public_key().encrypt(b"k" * 16, padding.PKCS1v15()), padding.PKCS1v15()) == b"k" * 16


def test_an_adopted_key_staged_and_discarded_leaves_nothing(backend: KeyBackend, token: SoftHsmToken) -> None:
    adopted = backend.adopt(pki.private_pem(cached_key("P-256")), None, source="the CA key", hint="give it")
    adopted.stage("ca.key").discard()
    assert labels(token) == []


def test_an_adopted_key_needs_its_password(backend: KeyBackend) -> None:
    data = pki.private_pem(cached_key("P-256"), b"secret")
    with pytest.raises(CAError, match="encrypted but no passphrase was given: give the password"):
        backend.adopt(data, None, source="the CA key", hint="give the password")


# --- errors -------------------------------------------------------------------------------------------


def test_a_wrong_pin_is_a_clear_error(token: SoftHsmToken, tmp_path: Path) -> None:
    keys = open_pkcs11(token, tmp_path, pin={"value": "000000"})
    with pytest.raises(CAError, match=rf"token '{token.label}' refused the PIN \(ca\.keys\.pkcs11\.pin\)"):
        keys.exists("ca.key")


def test_a_missing_key_is_a_ca_error_naming_it(backend: KeyBackend) -> None:
    assert not backend.exists("ca.key")
    with pytest.raises(CAError, match=r"pkcs11:token=.*;object=ca\.key;type=private: no such private key"):
        backend.load("ca.key")


def test_two_keys_with_one_label_are_a_ca_error(backend: KeyBackend, token: SoftHsmToken, tmp_path: Path) -> None:
    stored(backend, SPECS["p256"], "ca.key")
    stored(open_pkcs11(token, tmp_path, objects={"ra.key": {"label": "ca.key", "id": "01"}}), SPECS["p256"], "ra.key")
    with pytest.raises(CAError, match="2 private keys have this label; give the key's id"):
        backend.load("ca.key")


def test_an_ec_key_without_its_public_key_object_is_a_ca_error(backend: KeyBackend, token: SoftHsmToken) -> None:
    stored(backend, SPECS["p256"])
    session_of(token).run(
        lambda session: [obj.destroy() for obj in session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY})]
    )
    with pytest.raises(CAError, match="no EC public key object"):
        backend.load("ca.key")


def test_a_missing_token_or_module_is_a_ca_error(token: SoftHsmToken, tmp_path: Path) -> None:
    with pytest.raises(CAError, match=rf"has no token labelled 'elsewhere' \(tokens: '{token.label}'"):
        open_pkcs11(token, tmp_path, token_label="elsewhere").exists("ca.key")
    with pytest.raises(CAError, match="has no token in slot 4242"):
        open_pkcs11(token, tmp_path, token_label=None, slot=4242).exists("ca.key")
    with pytest.raises(CAError, match=r"the PKCS#11 module /nonexistent/lib\.so does not exist"):
        open_pkcs11(token, tmp_path, module="/nonexistent/lib.so").exists("ca.key")
    not_a_module = tmp_path / "not-a-module.so"
    not_a_module.write_bytes(b"\x7fELF but not really")
    with pytest.raises(CAError, match=r"cannot load the PKCS#11 module .*not-a-module\.so \(ca\.keys\.pkcs11"):
        open_pkcs11(token, tmp_path, module=str(not_a_module)).exists("ca.key")


def test_a_token_is_found_by_its_slot(backend: KeyBackend, token: SoftHsmToken, tmp_path: Path) -> None:
    key = stored(backend, SPECS["p256"])
    slot = pkcs11.lib(token.module).get_token(token_label=token.label).slot.slot_id
    by_slot = open_pkcs11(token, tmp_path, token_label=None, slot=slot)
    assert by_slot.load("ca.key").public_key() == key.public_key()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"module": None}, r"module must be the path"),
        ({"slot": 1}, r"by token_label or by slot .* and by one only"),
        ({"token_label": None}, r"by token_label or by slot"),
        ({"token_label": ""}, r"token_label must be a non-empty string"),
        ({"token_label": None, "slot": True}, r"slot must be a slot ID"),
        ({"token_label": None, "slot": -1}, r"slot must be a slot ID"),
        ({"pin": None}, r"pin: no PIN for the token: set ca\.keys\.pkcs11\.pin"),
        ({"pin": {"env": "SCEP_TEST_UNSET_PIN"}}, r"no PIN for the token: set SCEP_TEST_UNSET_PIN"),
        ({"pin": {"vault": "x"}}, r"unknown"),
        ({"serial": "1"}, r"unknown key\(s\) serial"),
        ({"objects": ["ca.key"]}, r"objects must map key names"),
        ({"objects": {"ca-key": {}}}, r"objects: unknown key\(s\) ca-key"),
        ({"objects": {"ca.key": {"label": ""}}}, r"objects\.ca\.key\.label must be a non-empty string"),
        ({"objects": {"ca.key": {"id": "xyz"}}}, r"objects\.ca\.key\.id must be hex bytes"),
        ({"objects": {"ca.key": {"id": 1}}}, r"objects\.ca\.key\.id must be hex bytes"),
        ({"objects": {"ca.key": {"slot": 1}}}, r"objects\.ca\.key: unknown key\(s\) slot"),
    ],
)
def test_bad_settings_are_config_errors(
    token: SoftHsmToken, tmp_path: Path, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        open_pkcs11(token, tmp_path, **overrides)


def test_the_pin_is_a_secret_reference(token: SoftHsmToken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCEP_PKCS11_PIN", token.pin)
    settings = {key: value for key, value in token.settings().items() if key != "pin"}  # the default: the env
    assert not open_backend(KeyContext(tmp_path, settings=settings), "pkcs11").exists("ca.key")
    (tmp_path / "pin").write_text(token.pin + "\n")
    for pin in ({"file": str(tmp_path / "pin")}, SecretSource(file=str(tmp_path / "pin")), token.pin):
        assert not open_pkcs11(token, tmp_path, pin=pin).exists("ca.key")
    assert "123456" not in repr(Pkcs11Backend(KeyContext(tmp_path, settings=token.settings())).settings)


# --- threads and processes ----------------------------------------------------------------------------


def test_many_threads_sign_and_decrypt_at_once(backend: KeyBackend) -> None:
    ra = as_ra_key(stored(backend, RSA, "ra.key"), "ra.key")
    ec_key = stored(backend, SPECS["p256"], "ocsp.key")
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        try:
            start.wait()
            for round_ in range(5):
                data = f"{worker}-{round_}".encode()
                verify(ra.public_key(), ra.sign(data), data, hashes.SHA256())
                verify(ec_key.public_key(), ec_key.sign(data), data, hashes.SHA256())
                assert ra.decrypt(ra.public_key().encrypt(data, padding.PKCS1v15()), padding.PKCS1v15()) == data
        except BaseException as exc:  # noqa: BLE001 - reported below, from the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == [] and not any(thread.is_alive() for thread in threads)


def test_a_forked_child_signs_with_a_session_of_its_own(backend: KeyBackend) -> None:
    key = stored(backend, RSA)
    verify(key.public_key(), key.sign(b"parent"), b"parent", hashes.SHA256())  # the parent's session is open
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: sign, and hand the signature back
        code = 1
        try:
            os.close(read_end)
            os.write(write_end, key.sign(b"child"))
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        signature = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    verify(key.public_key(), signature, b"child", hashes.SHA256())
    verify(key.public_key(), key.sign(b"parent again"), b"parent again", hashes.SHA256())


def in_child(action: Callable[[], None]) -> None:
    """Run ``action`` in a forked child process; its failure fails the test."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_key_another_process_replaces_keeps_signing_here(backend: KeyBackend) -> None:
    key = stored(backend, SPECS["p256"])
    verify(key.public_key(), key.sign(b"before"), b"before", hashes.SHA256())
    in_child(lambda: backend.generate(SPECS["p256"]).stage("ca.key").commit())
    verify(key.public_key(), key.sign(b"after"), b"after", hashes.SHA256())
    assert backend.load("ca.key").public_key() != key.public_key()
    in_child(lambda: backend.generate(SPECS["p256"]).stage("ca.key").commit())  # now the key is gone
    with pytest.raises(CAError, match="no longer holds the key this process loaded"):
        key.sign(b"gone")


def test_a_replaced_key_is_found_again_under_its_previous_label(backend: KeyBackend) -> None:
    key = stored(backend, SPECS["p256"])
    stored(backend, SPECS["p256"])
    close_sessions()  # a new session (as after a fork) finds the key again: now under ca.key.previous
    verify(key.public_key(), key.sign(b"data"), b"data", hashes.SHA256())


def test_a_key_replaced_on_the_token_is_not_silently_another_key(backend: KeyBackend) -> None:
    key = stored(backend, SPECS["p256"])
    stored(backend, SPECS["p256"])
    stored(backend, SPECS["p256"])  # key's objects are gone; ca.key and ca.key.previous are other keys
    close_sessions()
    with pytest.raises(CAError, match="no longer holds the key this process loaded"):
        key.sign(b"data")
