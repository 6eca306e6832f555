"""A device key on the client side: its CMS signatures verify, and it opens what is enveloped to it."""

from __future__ import annotations

from functools import cache

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from scep_server.scep import client, cms
from scep_server.scep.device_key import DeviceKey
from scep_server.scep.envelope import decrypt, encrypt
from scep_server.scep.types import ContentCipher, DigestAlgorithm


@cache
def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("digest", [DigestAlgorithm.SHA1, DigestAlgorithm.SHA256])
def test_a_signed_data_made_with_a_device_key_verifies(digest: DigestAlgorithm) -> None:
    signer = client.self_signed_signer(_rsa(), x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")]))
    der = cms.sign(b"content", signer_cert=signer, signer_key=DeviceKey(_rsa()), digest=digest, attributes=[])
    message = cms.parse_signed(der)
    message.verify()
    assert message.content == b"content" and message.digest is digest


def test_ec_signatures_are_ecdsa() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    signature = DeviceKey(key).sign(b"data", hashes.SHA256())
    key.public_key().verify(signature, b"data", ec.ECDSA(hashes.SHA256()))


def test_a_device_key_opens_what_is_enveloped_to_it() -> None:
    cert = client.self_signed_signer(_rsa(), x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "device")]))
    envelope = encrypt(b"the issued certificate", cert, ContentCipher.AES128)
    assert decrypt(envelope, DeviceKey(_rsa()), cert).content == b"the issued certificate"


def test_an_ec_device_key_cannot_decrypt() -> None:
    with pytest.raises(TypeError, match="EC key cannot decrypt"):
        DeviceKey(ec.generate_private_key(ec.SECP256R1())).decrypt(b"x", padding.PKCS1v15())


def test_repr_hides_the_key() -> None:
    assert repr(DeviceKey(_rsa())) == "DeviceKey()"
