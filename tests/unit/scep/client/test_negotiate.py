"""Reading the CA's certificates and capabilities, and choosing the recipient and algorithms from them
(scep_server/scep/client/negotiate.py)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization

from scep_server.scep import cms
from scep_server.scep.client import ScepClientError, choose_algorithms, parse_caps, parse_get_ca_cert, pick_recipient
from scep_server.scep.types import ContentCipher, DigestAlgorithm
from tests.support.pki import KeyType, key_usage, new_key, self_signed

from .conftest import RA_USAGE, Pki


@pytest.mark.parametrize("content_type", ["application/x-x509-ca-cert", "Application/X-X509-CA-Cert; charset=x"])
def test_get_ca_cert_single(pki: Pki, content_type: str) -> None:
    body = pki.ca.public_bytes(serialization.Encoding.DER)
    assert parse_get_ca_cert(body, content_type) == [pki.ca]


def test_get_ca_cert_ra_chain(pki: Pki) -> None:
    body = cms.certs_only([pki.ra, pki.ca])
    assert parse_get_ca_cert(body, "application/x-x509-ca-ra-cert") == [pki.ra, pki.ca]


@pytest.mark.parametrize("content_type", ["application/octet-stream", ""])
def test_get_ca_cert_sniffs_unknown_types(pki: Pki, content_type: str) -> None:
    assert parse_get_ca_cert(pki.ca.public_bytes(serialization.Encoding.DER), content_type) == [pki.ca]
    assert parse_get_ca_cert(pki.ca.public_bytes(serialization.Encoding.PEM), content_type) == [pki.ca]
    assert parse_get_ca_cert(cms.certs_only([pki.ra, pki.ca]), content_type) == [pki.ra, pki.ca]


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"garbage", "application/x-x509-ca-cert", "not a certificate"),
        (b"garbage", "application/x-x509-ca-ra-cert", "not a certificates-only"),
        (b"garbage", "text/html", "not a certificates-only"),
        (cms.certs_only([]), "application/x-x509-ca-ra-cert", "no certificate"),
    ],
)
def test_get_ca_cert_rejects(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(ScepClientError, match=message):
        parse_get_ca_cert(body, content_type)


def test_pick_recipient(pki: Pki) -> None:
    signing_ra = pki.authority.issue("Sign RA", key=pki.ra_key, usage=key_usage("digital_signature")).cert
    bare_ra = pki.authority.issue("Bare RA", key=pki.ra_key).cert
    ec_ra = pki.authority.issue("EC RA", key_type=KeyType.P256, usage=RA_USAGE).cert
    assert pick_recipient([pki.ca]) == pki.ca
    assert pick_recipient([pki.ca, pki.ra]) == pki.ra
    assert pick_recipient([signing_ra, pki.ca, pki.ra]) == pki.ra
    assert pick_recipient([signing_ra, pki.ca]) == pki.ca
    assert pick_recipient([pki.ca, bare_ra, signing_ra]) == bare_ra
    assert pick_recipient([ec_ra, pki.ca]) == pki.ca


def test_pick_recipient_lowest_ca_in_chain(pki: Pki) -> None:
    sub = pki.authority.issue("Sub CA", ca=True).cert
    assert pick_recipient([pki.ca, sub]) == sub
    assert pick_recipient([sub, pki.ca]) == sub


def test_pick_recipient_without_rsa() -> None:
    with pytest.raises(ScepClientError, match="no RSA certificate"):
        pick_recipient([self_signed("EC CA", new_key(KeyType.P256), ca=True)])


def test_parse_caps() -> None:
    text = "Renewal\r\nsha-256\r\nAES\nPOSTPKIOperation\n\nX-Vendor-Thing\r\n"
    assert parse_caps(text) == {"Renewal", "SHA-256", "AES", "POSTPKIOperation", "X-Vendor-Thing"}
    assert parse_caps("") == frozenset()


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        ({"SCEPStandard"}, (ContentCipher.AES128, DigestAlgorithm.SHA256)),
        ({"AES", "SHA-512"}, (ContentCipher.AES128, DigestAlgorithm.SHA512)),
        ({"DES3", "SHA-1"}, (ContentCipher.DES3, DigestAlgorithm.SHA1)),
        (set(), (ContentCipher.DES3, DigestAlgorithm.SHA1)),
    ],
)
def test_choose_algorithms(caps: set[str], expected: tuple[ContentCipher, DigestAlgorithm]) -> None:
    assert choose_algorithms(frozenset(caps)) == expected
