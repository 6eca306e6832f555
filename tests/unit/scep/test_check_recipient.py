"""``check_recipient`` refuses exactly what ``encrypt`` would: the RSA size limits of each key transport."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from scep_server.errors import BadAlg
from scep_server.scep.client import self_signed_signer
from scep_server.scep.envelope import check_recipient, encrypt
from scep_server.scep.types import ContentCipher, DigestAlgorithm, KeyTransport

TRANSPORTS = [
    KeyTransport.RSA_PKCS1V15, KeyTransport.RSA_OAEP, KeyTransport.oaep(DigestAlgorithm.SHA256),
    KeyTransport.oaep(DigestAlgorithm.SHA384), KeyTransport.oaep(DigestAlgorithm.SHA512),
]
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recipient")])


@cache
def _recipient(bits: int) -> x509.Certificate:
    return self_signed_signer(rsa.generate_private_key(public_exponent=65537, key_size=bits), NAME)


@pytest.mark.parametrize("bits", [1024, 1536, 2048])
@pytest.mark.parametrize("transport", TRANSPORTS, ids=lambda t: f"{t.name}-{t.oaep_hash}")
@pytest.mark.parametrize("cipher", list(ContentCipher), ids=lambda c: c.name)
def test_the_check_agrees_with_encrypting(bits: int, transport: KeyTransport, cipher: ContentCipher) -> None:
    recipient = _recipient(bits)
    try:
        encrypt(b"content", recipient, cipher, transport)
    except BadAlg:
        with pytest.raises(BadAlg, match="cannot be wrapped"):
            check_recipient(recipient, cipher, transport)
    else:
        check_recipient(recipient, cipher, transport)


def test_a_recipient_without_an_rsa_key_is_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    recipient = (
        x509.CertificateBuilder().subject_name(NAME).issuer_name(NAME).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    with pytest.raises(BadAlg, match="no RSA key"):
        check_recipient(recipient, ContentCipher.AES128, KeyTransport.RSA_PKCS1V15)
