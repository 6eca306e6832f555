"""Inputs the fuzz targets found that broke the property, kept as regression tests now that they are fixed.

Each test feeds the reproducer to its target and expects a documented outcome. A new finding is added
here as a strict xfail with its entry in known.py, and both go when the fix lands. Raw reproducers are
complete pkiMessages; the others depend on this run's throw-away CA and are built from it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp

from fuzz import material, messages, seeds, targets
from fuzz.targets import UNREADABLE
from scep_server.scep.types import MessageType

# A SignedData whose eContent, of an unknown eContentType 1.2.3, is a REAL (09 00).
REAL_CONTENT = bytes.fromhex("302206092a864886f70d010702a01530130201013100300806022a03a002090031023000")
# A SignedData whose one signed attribute (messageType) holds a constructed REAL of indefinite length,
# 29 80 00 00; no signer certificate is needed: the attribute is read first.
REAL_ATTRIBUTE = bytes.fromhex(
    "306106092a864886f70d010702a05430520201013100300b06092a864886f70d010701313e303c020101300530000201"
    "01300906052b0e03021a0500a0143012060a6086480186f845010902310429800000300d06092a864886f70d010101"
    "05000400"
)
# envelope_attributes records: recipientNonce = EXTERNAL 28 03 13 04 46 and a senderNonce of 40 bytes of
# tag 0x5A; asn1crypto re-encodes the SET OF while dumping it and fails on the EXTERNAL.
EXTERNAL_IN_ATTRIBUTE_SET = bytes.fromhex(
    "322803130446555a5affffffffffffffffffffffffffffffffffffffff0404100001020304050607466004133702550e0f"
)
# A pkiMessage with a minimal signer certificate (serial 1, empty names) whose messageType is the
# PrintableString "\xb22" ('²2'): '²'.isdigit() is True, int('²2') raises.
UNICODE_DIGIT_MESSAGE_TYPE = bytes.fromhex(
    "3081f506092a864886f70d010702a081e73081e40201013100300b06092a864886f70d010701a060305e304a020101"
    "300d06092a864886f70d01010105003000301e170d3236303130313030303030305a170d33363031303130303030"
    "30305a30003012300d06092a864886f70d0101010500030100300d06092a864886f70d0101010500030100316e306c"
    "02010130053000020101300906052b0e03021a0500a0443012060a6086480186f84501090231041302b2323014060a"
    "6086480186f8450109073106130446555a5a3018060a6086480186f845010905310a04080001030607050d0e300d06"
    "092a864886f70d01010105000400"
)
SHA256_NULL = bytes.fromhex("300d06096086480165030402010500")  # AlgorithmIdentifier sha256, NULL parameters
SHA256_BOOLEAN = bytes.fromhex("300d06096086480165030402010100")  # the same with an empty BOOLEAN instead


def test_an_encapsulated_content_asn1crypto_cannot_read_is_unreadable() -> None:
    assert targets.envelope_raw(REAL_CONTENT) == UNREADABLE


def test_a_signed_attribute_asn1crypto_cannot_reencode_is_unreadable() -> None:
    assert targets.envelope_raw(REAL_ATTRIBUTE) == UNREADABLE


def test_a_set_of_attributes_asn1crypto_cannot_reencode_is_unreadable() -> None:
    assert targets.envelope_attributes(EXTERNAL_IN_ATTRIBUTE_SET) == UNREADABLE


def test_a_message_type_with_a_unicode_digit_is_unreadable() -> None:
    assert targets.envelope_raw(UNICODE_DIGIT_MESSAGE_TYPE) == UNREADABLE


def test_a_signing_time_without_a_time_zone_is_answered() -> None:
    local = datetime.now(UTC).strftime("%Y%m%d%H%M%S").encode()  # GeneralizedTime without 'Z'
    records = messages.attribute_records(MessageType.PKCS_REQ, None) + bytes([1, 0x18, len(local)]) + local
    assert targets.envelope_attributes(records) in {targets.ACCEPTED, "BadTime", "BadRequest", UNREADABLE}


def _ocsp_request(*cert_ids: bytes) -> bytes:
    """An OCSPRequest (no version, no extensions) for the DER CertIDs given."""
    tlv = messages._tlv
    return tlv(0x30, tlv(0x30, tlv(0x30, b"".join(tlv(0x30, cert_id) for cert_id in cert_ids))))


def _cert_id(serial: bytes, algorithm: hashes.HashAlgorithm | None = None) -> bytes:
    """The DER CertID (SHA-1 unless ``algorithm``) of the fuzz OCSP CA with the DER INTEGER ``serial``."""
    single = seeds._ocsp_single(material.ocsp_ca().ca_cert, 1, algorithm or hashes.SHA1())
    cert_id = single[8:]  # OCSPRequest, TBSRequest, requestList and Request headers: two octets each
    assert cert_id.endswith(b"\x02\x01\x01")
    return messages._tlv(0x30, cert_id[2:-3] + serial)


def test_an_ocsp_request_for_a_negative_serial_is_answered() -> None:
    der = _ocsp_request(_cert_id(b"\x02\x01\xff"))  # serialNumber -1
    assert targets.ocsp_request(der) in {"MALFORMED_REQUEST", "SUCCESSFUL"}


def test_an_ocsp_response_echoing_cert_ids_can_be_read_by_cryptography() -> None:
    """Not a crash: parse_request does not check a CertID's hashAlgorithm parameters, and a response for
    several certificates echoes the CertIDs as sent, which cryptography then refuses to load."""
    odd = _cert_id(b"\x02\x01\x04", hashes.SHA256()).replace(SHA256_NULL, SHA256_BOOLEAN)
    der = _ocsp_request(_cert_id(b"\x02\x01\x01"), odd)
    assert targets.ocsp_request(der) in {"MALFORMED_REQUEST", "SUCCESSFUL"}
    ocsp.load_der_ocsp_response(material.ocsp_responder().respond(der).der)
