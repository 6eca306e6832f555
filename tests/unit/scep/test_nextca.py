"""GetNextCACert (RFC 8894 §4.7): the reply scep_server/scep/nextca.py builds, signed by the current CA and
RA keys, and what scep_server/scep/client/nextca.py accepts of it: only a valid signature by a trusted
signer, and never an exception other than ScepClientError."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scep_server.ca.keys import KeyContext, KeySpec, open_backend
from scep_server.ca.keys.local import LocalKey
from scep_server.scep import cms
from scep_server.scep.client.nextca import NextCa, get_next_ca_cert, read_next_ca
from scep_server.scep.client.replies import ScepClientError
from scep_server.scep.nextca import NEXT_CA_CERT, NextCaSigner, build_next_ca_response
from scep_server.scep.types import Attr, DigestAlgorithm
from tests.support.env import require_tool
from tests.support.pki import CA, Issued, KeyType, certificate_builder, key_usage, shared_key
from tests.support.softhsm import softhsm_token

NOW = datetime.now(UTC).replace(microsecond=0)
CURRENT = {"not_before": NOW - timedelta(days=1), "not_after": NOW + timedelta(days=30)}
NEXT = {"not_before": NOW - timedelta(days=1), "not_after": NOW + timedelta(days=400)}
RA_USAGE = key_usage("digital_signature", "key_encipherment")
SLOT = 40  # keys of slots of their own: no other test's certificate shares them


@dataclass(frozen=True)
class Rollover:
    """The current CA and RA, and the next ones: an RA under a next CA under a next root."""

    current_ca: CA
    current_ra: Issued
    next_root: CA
    next_ca: CA
    next_ra: Issued
    unrelated: CA = field(default_factory=lambda: CA.root("Unrelated CA", key=shared_key(slot=SLOT + 5), **CURRENT))

    @property
    def next_certificates(self) -> list[x509.Certificate]:
        return [self.next_ra.cert, self.next_ca.cert, self.next_root.cert]

    def signer(self, who: CA | Issued) -> NextCaSigner:
        return NextCaSigner(who.cert, LocalKey(who.key))

    def signers(self) -> list[NextCaSigner]:
        """The current CA's and RA's, as the server passes them."""
        return [self.signer(self.current_ca), self.signer(self.current_ra)]

    def reply(self, certificates: Sequence[x509.Certificate] | None = None) -> bytes:
        return build_next_ca_response(
            self.next_certificates if certificates is None else certificates, self.signers(), now=NOW
        )


@cache
def rollover(ca_key_type: KeyType = KeyType.RSA) -> Rollover:
    ca_key = shared_key(KeyType.RSA, SLOT) if ca_key_type is KeyType.RSA else shared_key(ca_key_type, SLOT)
    current_ca = CA.root("Current CA", key=ca_key, **CURRENT)
    current_ra = current_ca.issue("Current RA", key=shared_key(slot=SLOT + 1), usage=RA_USAGE, **CURRENT)
    next_root = CA.root("Next Root", key=shared_key(slot=SLOT + 2), **NEXT)
    next_ca = next_root.child("Next CA", key=shared_key(slot=SLOT + 3), **NEXT)
    next_ra = next_ca.issue("Next RA", key=shared_key(slot=SLOT + 4), usage=RA_USAGE, **NEXT)
    return Rollover(current_ca, current_ra, next_root, next_ca, next_ra)


@pytest.fixture(scope="module")
def pki() -> Rollover:
    return rollover()


def _fingerprints(certificates: Sequence[x509.Certificate]) -> list[bytes]:
    return [c.fingerprint(hashes.SHA256()) for c in certificates]


# The message the server builds


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 2, 0)], ids=str)
def test_the_reply_is_signed_data_over_a_certs_only_signed_data(pki: Rollover, order: tuple[int, ...]) -> None:
    next_certificates = [pki.next_certificates[i] for i in order]
    signed = asn1_cms.ContentInfo.load(pki.reply(next_certificates))["content"]
    assert signed["encap_content_info"]["content_type"].native == "data"
    inner = asn1_cms.ContentInfo.load(signed["encap_content_info"]["content"].native)
    assert inner["content_type"].native == "signed_data"
    assert len(inner["content"]["signer_infos"]) == 0
    assert isinstance(inner["content"]["encap_content_info"]["content"], core.Void)
    inner_ders = [c.chosen.dump() for c in inner["content"]["certificates"]]
    assert inner_ders == [c.public_bytes(serialization.Encoding.DER) for c in next_certificates]  # as given
    outer_ders = {c.chosen.dump() for c in signed["certificates"]}
    assert outer_ders == {w.cert.public_bytes(serialization.Encoding.DER) for w in (pki.current_ca, pki.current_ra)}


def test_each_signer_adds_a_signer_info_with_the_three_signed_attributes(pki: Rollover) -> None:
    signer_infos = asn1_cms.ContentInfo.load(pki.reply())["content"]["signer_infos"]
    serials = sorted(s["sid"].chosen["serial_number"].native for s in signer_infos)  # a SET OF: DER order
    assert serials == sorted([pki.current_ca.cert.serial_number, pki.current_ra.cert.serial_number])
    for signer_info in signer_infos:
        attributes = {a["type"].dotted: a["values"][0] for a in signer_info["signed_attrs"]}
        assert set(attributes) == {Attr.CONTENT_TYPE.value, Attr.MESSAGE_DIGEST.value, Attr.SIGNING_TIME.value}
        assert attributes[Attr.CONTENT_TYPE.value].native == "data"
        assert attributes[Attr.SIGNING_TIME.value].native == NOW


def test_the_builder_refuses_what_it_cannot_sign(pki: Rollover) -> None:
    with pytest.raises(ValueError, match="next certificate"):
        build_next_ca_response([], pki.signers())
    with pytest.raises(ValueError, match="signer"):
        build_next_ca_response(pki.next_certificates, [])
    mismatched = NextCaSigner(pki.current_ca.cert, LocalKey(pki.current_ra.key))
    with pytest.raises(ValueError, match="not the key of its certificate"):
        build_next_ca_response(pki.next_certificates, [mismatched])


# What the client accepts


def test_round_trip_returns_the_next_ra_ca_and_chain(pki: Rollover) -> None:
    read = read_next_ca(pki.reply(), [pki.current_ca.cert, pki.current_ra.cert], now=NOW)
    assert (read.ra, read.ca, read.chain) == (pki.next_ra.cert, pki.next_ca.cert, (pki.next_root.cert,))
    assert read.signer in (pki.current_ca.cert, pki.current_ra.cert)  # both are trusted: the first SignerInfo


def test_the_split_does_not_depend_on_the_order(pki: Rollover) -> None:
    reply = pki.reply([pki.next_root.cert, pki.next_ca.cert, pki.next_ra.cert])
    read = read_next_ca(reply, [pki.current_ca.cert], now=NOW)
    assert (read.ra, read.ca, read.chain) == (pki.next_ra.cert, pki.next_ca.cert, (pki.next_root.cert,))


def test_without_an_ra_the_ca_is_the_lowest_ca_certificate(pki: Rollover) -> None:
    read = read_next_ca(pki.reply([pki.next_root.cert, pki.next_ca.cert]), [pki.current_ca.cert], now=NOW)
    assert (read.ra, read.ca, read.chain) == (None, pki.next_ca.cert, (pki.next_root.cert,))
    read = read_next_ca(pki.reply([pki.next_root.cert]), [pki.current_ca.cert], now=NOW)
    assert (read.ra, read.ca, read.chain) == (None, pki.next_root.cert, ())


@pytest.mark.parametrize("trusted", ["current_ca", "current_ra"])
def test_either_current_certificate_alone_is_enough(pki: Rollover, trusted: str) -> None:
    anchor: CA | Issued = getattr(pki, trusted)
    read = read_next_ca(pki.reply(), [anchor.cert], now=NOW)
    assert read.signer == anchor.cert
    assert read.ca == pki.next_ca.cert


def test_a_signer_the_trusted_ca_merely_issued_is_not_trusted(pki: Rollover) -> None:
    """Any device holds a certificate of the CA: only the CA and RA certificates themselves vouch."""
    ra_only = build_next_ca_response(pki.next_certificates, [pki.signer(pki.current_ra)], now=NOW)
    with pytest.raises(ScepClientError, match="not one of the trusted certificates"):
        read_next_ca(ra_only, [pki.current_ca.cert], now=NOW)
    assert read_next_ca(ra_only, [pki.current_ra.cert], now=NOW).signer == pki.current_ra.cert


def test_an_unrelated_ca_is_no_trust(pki: Rollover) -> None:
    with pytest.raises(ScepClientError, match="no valid signature by a trusted signer"):
        read_next_ca(pki.reply(), [pki.unrelated.cert], now=NOW)


def test_the_unrelated_ca_s_own_signature_is_no_trust_either(pki: Rollover) -> None:
    reply = build_next_ca_response(pki.next_certificates, [pki.signer(pki.unrelated)], now=NOW)
    with pytest.raises(ScepClientError, match="no valid signature by a trusted signer"):
        read_next_ca(reply, [pki.current_ca.cert, pki.current_ra.cert], now=NOW)


def test_a_signer_past_its_validity_is_no_trust(pki: Rollover) -> None:
    later = NOW + timedelta(days=60)
    with pytest.raises(ScepClientError, match="not valid now"):
        read_next_ca(pki.reply(), [pki.current_ca.cert, pki.current_ra.cert], now=later)


Change = Callable[[asn1_cms.SignedData], None]


def _with_signed_data(der: bytes, change: Change) -> bytes:
    info = asn1_cms.ContentInfo.load(der)
    change(info["content"])
    return bytes(asn1_cms.ContentInfo({"content_type": "signed_data", "content": info["content"]}).dump())


def test_a_changed_econtent_fails_the_message_digest(pki: Rollover) -> None:
    other = cms.certs_only([pki.unrelated.cert])

    def swap(signed: asn1_cms.SignedData) -> None:
        signed["encap_content_info"] = {"content_type": "data", "content": other}

    tampered = _with_signed_data(pki.reply(), swap)
    with pytest.raises(ScepClientError, match="messageDigest does not match"):
        read_next_ca(tampered, [pki.current_ca.cert, pki.current_ra.cert], now=NOW)


def _flip_signature(signer: CA | Issued) -> Change:
    """Change a bit of ``signer``'s signature (SignerInfos are a SET OF: found by serial, not by place)."""

    def flip(signed: asn1_cms.SignedData) -> None:
        serial = signer.cert.serial_number
        signer_info = next(s for s in signed["signer_infos"] if s["sid"].chosen["serial_number"].native == serial)
        signature = bytearray(signer_info["signature"].native)
        signature[len(signature) // 2] ^= 0x01
        signer_info["signature"] = bytes(signature)

    return flip


def test_a_changed_signature_does_not_verify(pki: Rollover) -> None:
    tampered = _with_signed_data(pki.reply(), _flip_signature(pki.current_ca))
    tampered = _with_signed_data(tampered, _flip_signature(pki.current_ra))
    with pytest.raises(ScepClientError, match="signature does not verify"):
        read_next_ca(tampered, [pki.current_ca.cert, pki.current_ra.cert], now=NOW)


def test_one_valid_trusted_signature_is_enough(pki: Rollover) -> None:
    tampered = _with_signed_data(pki.reply(), _flip_signature(pki.current_ca))
    assert read_next_ca(tampered, [pki.current_ca.cert, pki.current_ra.cert], now=NOW).signer == pki.current_ra.cert
    with pytest.raises(ScepClientError, match="does not verify"):
        read_next_ca(tampered, [pki.current_ca.cert], now=NOW)


def _signed_by_ca(pki: Rollover, content: bytes) -> bytes:
    """``content`` as the eContent of a reply the current CA signs, whatever it holds."""
    ca = pki.current_ca
    return cms.sign(content, signer_cert=ca.cert, signer_key=LocalKey(ca.key), digest=DigestAlgorithm.SHA256,
                    attributes=[], signing_time=NOW)  # fmt: skip


UNUSABLE_CONTENTS: dict[str, tuple[Callable[[Rollover], bytes], str]] = {
    "empty": (lambda pki: b"", "no encapsulated content"),
    "garbage": (lambda pki: b"not DER at all", "not a certificates-only SignedData"),
    "data-content-info": (
        lambda pki: asn1_cms.ContentInfo({"content_type": "data", "content": b"x"}).dump(), "not a certificates-only"
    ),
    "no-certificate": (lambda pki: cms.certs_only([]), "holds no certificate"),
    "ra-only": (lambda pki: cms.certs_only([pki.next_ra.cert]), "no CA certificate"),
    "two-roots": (
        lambda pki: cms.certs_only([pki.next_root.cert, pki.unrelated.cert]), "2 candidates for the next CA"
    ),
}


@pytest.mark.parametrize("case", UNUSABLE_CONTENTS)
def test_a_trusted_signature_over_unusable_content_is_refused(pki: Rollover, case: str) -> None:
    content, message = UNUSABLE_CONTENTS[case]
    with pytest.raises(ScepClientError, match=message):
        read_next_ca(_signed_by_ca(pki, content(pki)), [pki.current_ca.cert], now=NOW)


@pytest.mark.parametrize(
    ("der", "message"),
    [
        (b"", "not a signed CMS message"),
        (b"\x30\x03\x02\x01\x01", "not a signed CMS message"),
        (cms.certs_only([]), "has no signer"),
    ],
    ids=["empty", "not-content-info", "degenerate"],
)
def test_what_is_no_signed_reply_is_refused(der: bytes, message: str) -> None:
    with pytest.raises(ScepClientError, match=message):
        read_next_ca(der, [], now=NOW)


def test_a_reply_with_another_content_type_is_refused(pki: Rollover) -> None:
    def retype(signed: asn1_cms.SignedData) -> None:
        signed["encap_content_info"]["content_type"] = "1.3.6.1.4.1.55555.1"

    with pytest.raises(ScepClientError, match="not id-data"):
        read_next_ca(_with_signed_data(pki.reply(), retype), [pki.current_ca.cert], now=NOW)


def test_a_signer_missing_from_the_certificates_is_refused(pki: Rollover) -> None:
    def drop_certificates(signed: asn1_cms.SignedData) -> None:
        ra = pki.current_ra.cert.public_bytes(serialization.Encoding.DER)
        signed["certificates"] = [c for c in signed["certificates"] if c.chosen.dump() != ra]

    with pytest.raises(ScepClientError, match="certificate is not in"):
        read_next_ca(_with_signed_data(pki.reply(), drop_certificates), [pki.current_ca.cert], now=NOW)


@pytest.mark.parametrize("ca_key_type", [KeyType.P256, KeyType.P384], ids=str)
def test_an_ec_ca_key_signs_and_verifies(ca_key_type: KeyType) -> None:
    ec_pki = rollover(ca_key_type)
    assert isinstance(ec_pki.current_ca.cert.public_key(), ec.EllipticCurvePublicKey)
    read = read_next_ca(ec_pki.reply(), [ec_pki.current_ca.cert], now=NOW)
    assert (read.signer, read.ca, read.ra) == (ec_pki.current_ca.cert, ec_pki.next_ca.cert, ec_pki.next_ra.cert)
    tampered = _with_signed_data(ec_pki.reply(), _flip_signature(ec_pki.current_ca))
    tampered = _with_signed_data(tampered, _flip_signature(ec_pki.current_ra))
    with pytest.raises(ScepClientError, match="signature does not verify"):
        read_next_ca(tampered, [ec_pki.current_ca.cert], now=NOW)


@pytest.mark.parametrize("spec", [KeySpec("rsa", rsa_bits=2048), KeySpec("ec", curve="P-256")], ids=["rsa", "p256"])
def test_a_ca_key_on_a_token_signs_the_reply(tmp_path: Path, pki: Rollover, spec: KeySpec) -> None:
    """The CA key never leaves its PKCS#11 token: the reply is signed through the backend's Signer."""
    with softhsm_token(tmp_path / "softhsm") as token:
        backend = open_backend(KeyContext(tmp_path, settings=token.settings()), "pkcs11")
        token_key = backend.generate(spec)
        builder = certificate_builder("Token CA", token_key.public_key(), ca=True, usage=key_usage("key_cert_sign"),
                                      **CURRENT)  # fmt: skip
        token_ca = token_key.sign_certificate(builder)
        reply = build_next_ca_response(pki.next_certificates, [NextCaSigner(token_ca, token_key)], now=NOW)
    read = read_next_ca(reply, [token_ca], now=NOW)
    assert (read.signer, read.ca, read.ra) == (token_ca, pki.next_ca.cert, pki.next_ra.cert)
    assert _openssl_verify(tmp_path, reply, token_ca).returncode == 0


# openssl as the independent verifier


def _openssl_verify(tmp_path: Path, der: bytes, ca: x509.Certificate) -> subprocess.CompletedProcess[bytes]:
    require_tool("openssl")  # missing, it skips locally and fails in CI
    (tmp_path / "reply.der").write_bytes(der)
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return subprocess.run(
        ["openssl", "cms", "-verify", "-inform", "DER", "-in", tmp_path / "reply.der", "-binary",
         "-CAfile", tmp_path / "ca.pem", "-purpose", "any", "-out", tmp_path / "content.der"],
        capture_output=True, check=False, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("ca_key_type", [KeyType.RSA, KeyType.P256], ids=str)
def test_openssl_verifies_the_reply_and_reads_the_next_certificates(tmp_path: Path, ca_key_type: KeyType) -> None:
    pki = rollover(ca_key_type)
    certificates = [pki.next_root.cert, pki.next_ra.cert, pki.next_ca.cert]
    done = _openssl_verify(tmp_path, pki.reply(certificates), pki.current_ca.cert)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    ders, _ = cms.read_certs_only((tmp_path / "content.der").read_bytes())
    assert _fingerprints([x509.load_der_x509_certificate(d) for d in ders]) == _fingerprints(certificates)


def test_openssl_refuses_a_changed_econtent(tmp_path: Path, pki: Rollover) -> None:
    other = cms.certs_only([pki.unrelated.cert])

    def swap(signed: asn1_cms.SignedData) -> None:
        signed["encap_content_info"] = {"content_type": "data", "content": other}

    done = _openssl_verify(tmp_path, _with_signed_data(pki.reply(), swap), pki.current_ca.cert)
    assert done.returncode != 0
    assert b"digest failure" in done.stderr.lower() or b"verification failure" in done.stderr.lower()


# Whatever the bytes, a ScepClientError or the genuine certificates

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# A changed serial number may read as negative, which cryptography warns about (an error in the tests).
NEGATIVE_SERIALS = pytest.mark.filterwarnings("ignore:Parsed a serial number which wasn't positive")


def _read_or_refuse(der: bytes) -> NextCa | None:
    pki = rollover()
    try:
        return read_next_ca(der, [pki.current_ca.cert, pki.current_ra.cert], now=NOW)
    except ScepClientError:
        return None


def _assert_refused_or_genuine(der: bytes) -> None:
    """Either a ScepClientError, or only bytes no signature covers changed and the content is the genuine one."""
    read = _read_or_refuse(der)
    if read is not None:
        pki = rollover()
        assert (read.ra, read.ca, read.chain) == (pki.next_ra.cert, pki.next_ca.cert, (pki.next_root.cert,))


@cache
def _reply() -> bytes:
    return rollover().reply()


@cache
def _econtent_span() -> tuple[int, int]:
    content = cms.certs_only(rollover().next_certificates)
    start = _reply().find(content)
    return start, start + len(content)


def _changed(der: bytes, data: st.DataObject, low: int, high: int) -> bytes:
    """``der`` with 1 to 8 of its bytes in [low, high) set to other values."""
    changed = bytearray(der)
    for _ in range(data.draw(st.integers(1, 8))):
        index = data.draw(st.integers(low, high - 1))
        changed[index] = data.draw(st.integers(0, 255).filter(lambda value, was=der[index]: value != was))
    return bytes(changed)


@FUZZ
@NEGATIVE_SERIALS
@given(st.data())
def test_byte_changes_are_refused_or_change_nothing_signed(data: st.DataObject) -> None:
    der = _reply()
    _assert_refused_or_genuine(_changed(der, data, 0, len(der)))


@FUZZ
@given(st.data())
def test_every_change_inside_the_econtent_is_refused(data: st.DataObject) -> None:
    start, end = _econtent_span()
    assert _read_or_refuse(_changed(_reply(), data, start, end)) is None


@FUZZ
@NEGATIVE_SERIALS
@given(st.data())
def test_changes_to_the_certificates_and_signer_infos_are_refused_or_change_nothing_signed(
    data: st.DataObject,
) -> None:
    der = _reply()
    _assert_refused_or_genuine(_changed(der, data, _econtent_span()[1], len(der)))


@FUZZ
@NEGATIVE_SERIALS
@given(st.data())
def test_truncations_and_insertions_are_refused_or_change_nothing_signed(data: st.DataObject) -> None:
    der = _reply()
    cut = data.draw(st.integers(0, len(der) - 1))
    _assert_refused_or_genuine(der[:cut] + data.draw(st.binary(max_size=16)) + der[cut + data.draw(st.integers(0, 4)):])


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_are_refused(data: bytes) -> None:
    assert _read_or_refuse(data) is None


# The HTTP exchange


@dataclass
class FakeReply:
    status_code: int = 200
    headers: Mapping[str, str] = field(default_factory=lambda: {"Content-Type": NEXT_CA_CERT})
    content: bytes = b""


@dataclass
class FakeSession:
    reply: FakeReply | OSError
    sent: list[tuple[str, dict[str, str], float]] = field(default_factory=list)

    def get(self, url: str, *, params: dict[str, str], timeout: float) -> FakeReply:
        self.sent.append((url, params, timeout))
        if isinstance(self.reply, OSError):
            raise self.reply
        return self.reply


def test_get_next_ca_cert_asks_for_it_and_reads_the_reply(pki: Rollover) -> None:
    session = FakeSession(FakeReply(content=pki.reply(), headers={"Content-Type": "Application/X-X509-Next-CA-Cert"}))
    read = get_next_ca_cert("http://127.0.0.1/scep", [pki.current_ca.cert], session=session, timeout=5, now=NOW)
    assert read.ca == pki.next_ca.cert
    assert session.sent == [("http://127.0.0.1/scep", {"operation": "GetNextCACert"}, 5)]


def test_get_next_ca_cert_names_the_ca_when_asked(pki: Rollover) -> None:
    session = FakeSession(FakeReply(content=pki.reply()))
    get_next_ca_cert("http://127.0.0.1/scep", [pki.current_ca.cert], session=session, message="corp", now=NOW)
    assert session.sent[0][1] == {"operation": "GetNextCACert", "message": "corp"}


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (FakeReply(status_code=404, content=b"no next CA"), "HTTP 404: no next CA"),
        (FakeReply(headers={"Content-Type": "application/x-x509-ca-ra-cert"}), "Content-Type"),
        (FakeReply(headers={}), "Content-Type ''"),
        (FakeReply(content=b"garbage"), "not a signed CMS message"),
        (ConnectionError("refused"), "no response: refused"),
    ],
    ids=["http-error", "ca-ra-cert-type", "no-type", "garbage", "unreachable"],
)
def test_get_next_ca_cert_refuses_a_bad_exchange(reply: FakeReply | OSError, message: str) -> None:
    with pytest.raises(ScepClientError, match=message):
        get_next_ca_cert("http://127.0.0.1/scep", [], session=FakeSession(reply), now=NOW)
