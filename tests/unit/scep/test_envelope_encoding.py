"""``envelope.encrypt`` assembles the EnvelopedData from its fields' DER: the result is what asn1crypto
encodes from the parsed structure, byte for byte, and it opens to the content, for every cipher and key
transport, with the recipient named by issuer and serial."""

from __future__ import annotations

from datetime import datetime

import pytest
from asn1crypto import cms as asn1_cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from scep_server.ca.keys.local import LocalKey
from scep_server.scep.envelope import decrypt, encrypt
from scep_server.scep.types import ContentCipher, DigestAlgorithm, KeyTransport

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")])
CERT = (
    x509.CertificateBuilder().subject_name(NAME).issuer_name(NAME).public_key(KEY.public_key())
    .serial_number(0xABCDEF).not_valid_before(datetime(2026, 1, 1)).not_valid_after(datetime(2027, 1, 1))
    .sign(KEY, hashes.SHA256())
)
TRANSPORTS = [
    KeyTransport.RSA_PKCS1V15,
    KeyTransport.oaep(DigestAlgorithm.SHA1),
    KeyTransport.oaep(DigestAlgorithm.SHA256),
    KeyTransport.oaep(DigestAlgorithm.SHA256, DigestAlgorithm.SHA1),
]


@pytest.mark.parametrize("cipher", list(ContentCipher))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_an_envelope_is_asn1cryptos_encoding_and_opens_to_its_content(
    cipher: ContentCipher, transport: KeyTransport
) -> None:
    content = b"certificates-only SignedData" * 40
    der = encrypt(content, CERT, cipher, transport)
    parsed = asn1_cms.ContentInfo.load(der)
    assert parsed.dump(force=True) == der
    enveloped = parsed["content"]
    assert enveloped["version"].native == "v0"
    ktri = enveloped["recipient_infos"][0].chosen
    assert ktri["rid"].chosen["serial_number"].native == 0xABCDEF
    opened = decrypt(der, LocalKey(KEY), CERT)
    assert (opened.content, opened.cipher, opened.key_transport) == (content, cipher, transport)
