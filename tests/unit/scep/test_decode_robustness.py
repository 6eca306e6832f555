"""Whatever bytes arrive, decoding ends in a ScepError (→ 400 or CertRep FAILURE), never another exception."""

from __future__ import annotations

import datetime
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scep_server.errors import ScepError
from scep_server.scep import client, message
from scep_server.scep.types import ContentCipher, MessageType
from tests.support import pki


@cache
def _ra() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    return key, pki.self_signed("fuzz RA", key, serial=1, not_before=now, not_after=now + datetime.timedelta(days=1))


@cache
def _valid_request() -> bytes:
    ra_key, ra_cert = _ra()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz device")])
    csr = client.build_csr(key, name, challenge_password="x")
    signer = client.self_signed_signer(key, name)
    built = client.build_pkcsreq(
        csr, signer_cert=signer, signer_key=key, recipient=ra_cert, cipher=ContentCipher.AES256
    )
    return built.der


def _decode(der: bytes) -> None:
    ra_key, ra_cert = _ra()
    try:
        signed, context = message.read_envelope(der)
        message.open_request(signed, context, ra_key=ra_key, ra_cert=ra_cert, options=message.DecodeOptions())
    except ScepError:
        pass


def test_the_unmutated_request_decodes() -> None:
    ra_key, ra_cert = _ra()
    signed, context = message.read_envelope(_valid_request())
    request = message.open_request(signed, context, ra_key=ra_key, ra_cert=ra_cert, options=message.DecodeOptions())
    assert isinstance(request, message.CertificateRequest) and not request.renewal
    assert request.cipher is ContentCipher.AES256


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    _decode(data)


@FUZZ
@given(st.data())
def test_byte_flips_in_a_valid_request(data: st.DataObject) -> None:
    der = bytearray(_valid_request())
    for _ in range(data.draw(st.integers(1, 8))):
        index = data.draw(st.integers(0, len(der) - 1))
        der[index] = data.draw(st.integers(0, 255))
    _decode(bytes(der))


@FUZZ
@given(st.data())
def test_truncations_and_splices(data: st.DataObject) -> None:
    der = _valid_request()
    start = data.draw(st.integers(0, len(der)))
    end = data.draw(st.integers(start, len(der)))
    insert = data.draw(st.binary(max_size=64))
    _decode(der[:start] + insert + der[end:])


@cache
def _device() -> tuple[rsa.RSAPrivateKey, x509.Certificate, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz device")])
    csr = client.build_csr(key, name, challenge_password="x")
    return key, client.self_signed_signer(key, name), csr.public_bytes(Encoding.DER)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_content_inside_a_genuine_envelope(data: st.DataObject) -> None:
    """The signature and envelope are sound; only the decrypted content (the CSR) is mangled."""
    key, signer, csr_der = _device()
    content = bytearray(csr_der)
    for _ in range(data.draw(st.integers(1, 6))):
        content[data.draw(st.integers(0, len(content) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(content)))
    message_type = data.draw(st.sampled_from([17, 19, 20, 21, 22]))
    built = client.build_pki_request(
        MessageType(message_type), bytes(content[:cut]), signer_cert=signer, signer_key=key,
        recipient=_ra()[1], transaction_id="FUZZ",
    )
    _decode(built.der)
