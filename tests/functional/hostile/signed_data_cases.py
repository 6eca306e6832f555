"""The SignedData table: the outer pkiMessage (RFC 8894 §3.2), its signature, signer and SCEP attributes."""

from __future__ import annotations

import datetime
import uuid

from asn1crypto import cms as asn1_cms
from asn1crypto import core

from scep_server.scep import client
from scep_server.scep.types import Attr, DigestAlgorithm
from tests.functional.conftest import Device
from tests.functional.hostile.csrs import ca_name, signer_with_unknown_key_algorithm
from tests.functional.hostile.messages import (
    attribute,
    certificates_of_a_stranger,
    digest_of,
    indefinite_length,
    lenient,
    mutated,
    octets,
    outer_content_type,
    printable,
    raw,
    second_signer,
    sid_issuer_is_the_ca,
    sid_key_identifier,
    sid_serial_plus_one,
    signature_by_another_key,
    signed_field,
    trailing,
    truncated_at,
    utc,
    valid,
    valid_wrong_challenge,
    with_signature,
    with_signer_info,
)
from tests.functional.hostile.support import (
    BAD_ALG,
    BAD_CHECK,
    BAD_REQUEST,
    BAD_TIME,
    CHALLENGE_TEXT,
    NONCE,
    NOW,
    R_CHALLENGE,
    R_DIGEST,
    R_SIGNATURE,
    R_TIME,
    SIGNATURE_TEXT,
    TRUNCATION_OFFSETS,
    Case,
    Env,
    scep,
)


def _no_signed_attributes(env: Env) -> bytes:
    info = asn1_cms.ContentInfo.load(valid(env))
    info["content"]["signer_infos"][0]["signed_attrs"] = None
    return bytes(info.dump(force=True))


def _sha1_get_crl(env: Env) -> bytes:
    device = Device()
    return client.build_get_crl(ca_name(env), 1, signer_cert=device.signer, signer_key=device.key,
                                recipient=env.server.ca.ra_cert, digest=DigestAlgorithm.SHA1).der


OUTER_CASES = [
    Case("outer contentType id-data", scep(outer_content_type("1.2.840.113549.1.7.1")), 400,
         body="not a SignedData"),
    Case("outer contentType id-digestedData", scep(outer_content_type("1.2.840.113549.1.7.5")), 400,
         body="not a SignedData"),
    Case("outer contentType an unassigned pkcs-7 OID", scep(outer_content_type("1.2.840.113549.1.7.9")), 400,
         body="not a SignedData"),
    *(Case(f"truncated at {offset}", scep(truncated_at(offset)), 400) for offset in TRUNCATION_OFFSETS),
    Case("trailing NUL octet", scep(trailing(b"\x00")), 400),
    Case("trailing second ContentInfo", scep(lambda env: valid(env) + valid(env)), 400),
    Case("BER indefinite-length outer SEQUENCE, read (wrong challenge)", scep(indefinite_length),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("SignedData version 99, read (wrong challenge)",
         scep(mutated(lambda env: valid_wrong_challenge(env), signed_field("version", 99))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("SignedData with content but no signerInfos",
         scep(mutated(valid, signed_field("signer_infos", []))), 400, body="found 0"),
    Case("two signers of different devices", scep(mutated(valid, second_signer)), 400, body="found 2"),
    Case("certificates SET empty", scep(mutated(valid, signed_field("certificates", []))), 400,
         body="signer's certificate is not in the pkiMessage"),
    Case("certificates field absent", scep(mutated(valid, signed_field("certificates", None))), 400,
         body="signer's certificate is not in the pkiMessage"),
    Case("certificate of a stranger only", scep(mutated(valid, certificates_of_a_stranger)), 400,
         body="signer's certificate is not in the pkiMessage"),
    Case("sid serial off by one", scep(mutated(valid, sid_serial_plus_one)), 400,
         body="signer's certificate is not in the pkiMessage"),
    Case("sid issuer is the CA's name", scep(mutated(valid, sid_issuer_is_the_ca)), 400,
         body="signer's certificate is not in the pkiMessage"),
    Case("sid a subjectKeyIdentifier no certificate has", scep(mutated(valid, sid_key_identifier)), 400,
         body="signer's certificate is not in the pkiMessage"),
    Case("digestAlgorithms SHA-512, signer SHA-256: read (wrong challenge)",
         scep(mutated(lambda env: valid_wrong_challenge(env),
                       signed_field("digest_algorithms", [{"algorithm": "sha512"}]))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("digestAlgorithms empty: read (wrong challenge)",
         scep(mutated(lambda env: valid_wrong_challenge(env), signed_field("digest_algorithms", []))),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("signer digest MD5", scep(mutated(valid, with_signer_info("digest_algorithm", {"algorithm": "md5"}))),
         fail_info=BAD_ALG, reason="digest algorithm is not supported"),
    Case("signer digest SHA-224", scep(mutated(valid, with_signer_info("digest_algorithm", {"algorithm": "sha224"}))),
         fail_info=BAD_ALG, reason="digest algorithm is not supported"),
    Case("signer digest SHA3-256",
         scep(mutated(valid, with_signer_info("digest_algorithm", {"algorithm": "sha3_256"}))), fail_info=BAD_ALG,
         reason="digest algorithm is not supported"),
    Case("signer digest an unknown OID",
         scep(mutated(valid, with_signer_info("digest_algorithm", {"algorithm": "1.2.3.4.5"}))), fail_info=BAD_ALG,
         reason="digest algorithm is not supported"),
    Case("SHA-1 GetCRL on a profile without allow_sha1", scep(lambda env: _sha1_get_crl(env), "strict"),
         fail_info=BAD_ALG, reason="SHA-1 message digests are disabled"),
    Case("signatureAlgorithm an unknown OID",
         scep(mutated(valid, with_signer_info("signature_algorithm", {"algorithm": "1.2.3.4.5"}))), fail_info=BAD_ALG,
         reason="Signature algorithm not known for 1.2.3.4.5"),
    Case("signatureAlgorithm DSA for an RSA key",
         scep(mutated(valid, with_signer_info("signature_algorithm", {"algorithm": "sha256_dsa"}))), fail_info=BAD_ALG,
         reason="sha256_dsa is not supported for this key"),
    Case("signatureAlgorithm ECDSA for an RSA key",
         scep(mutated(valid, with_signer_info("signature_algorithm", {"algorithm": "sha256_ecdsa"}))),
         fail_info=BAD_ALG, reason="sha256_ecdsa is not supported for this key"),
    Case("signatureAlgorithm RSASSA-PSS without its required parameters",
         scep(mutated(valid, with_signer_info("signature_algorithm", {"algorithm": "rsassa_pss"}))), fail_info=BAD_ALG,
         reason="RSASSA-PSS needs its parameters"),
    Case("signatureAlgorithm RSASSA-PSS over a PKCS#1 v1.5 signature", scep(mutated(valid, with_signer_info(
        "signature_algorithm", {"algorithm": "rsassa_pss", "parameters": {
            "hash_algorithm": {"algorithm": "sha256"},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
            "salt_length": 32}}))), fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("signatureAlgorithm RSASSA-PSS with an MD5 MGF", scep(mutated(valid, with_signer_info(
        "signature_algorithm", {"algorithm": "rsassa_pss", "parameters": {
            "hash_algorithm": {"algorithm": "sha256"},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "md5"}},
            "salt_length": 32}}))), fail_info=BAD_ALG, reason="'md5' is not a valid DigestAlgorithm"),
    Case("signature truncated by one octet", scep(mutated(valid, with_signature(lambda s: s[:-1]))),
         fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("signature empty", scep(mutated(valid, with_signature(lambda s: b""))), fail_info=BAD_CHECK,
         text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("signature all zero", scep(mutated(valid, with_signature(lambda s: bytes(len(s))))), fail_info=BAD_CHECK,
         text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("signature one octet longer", scep(mutated(valid, with_signature(lambda s: s + b"\x00"))),
         fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("signature by another key", scep(mutated(valid, signature_by_another_key)), fail_info=BAD_CHECK,
         text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("signature over the [0]-tagged attributes instead of the SET", scep(raw(signed_prefix=b"\xa0")),
         fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_SIGNATURE),
    Case("messageDigest missing", scep(raw(change={Attr.MESSAGE_DIGEST.value: None})), fail_info=BAD_CHECK,
         text=SIGNATURE_TEXT, reason=R_DIGEST),
    Case("messageDigest of other content, properly signed",
         scep(raw(change={Attr.MESSAGE_DIGEST.value: [octets(digest_of(DigestAlgorithm.SHA256, b"other"))]})),
         fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_DIGEST),
    Case("messageDigest of SHA-1 length", scep(raw(change={Attr.MESSAGE_DIGEST.value: [octets(b"\x00" * 20)]})),
         fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_DIGEST),
    Case("messageDigest empty", scep(raw(change={Attr.MESSAGE_DIGEST.value: [octets(b"")]})),
         fail_info=BAD_CHECK, text=SIGNATURE_TEXT, reason=R_DIGEST),
    Case("messageDigest an INTEGER", scep(raw(change={Attr.MESSAGE_DIGEST.value: [b"\x02\x01\x01"]})), 400,
         body="not decodable CMS"),
    Case("contentType attribute id-signedData", scep(raw(change={
        Attr.CONTENT_TYPE.value: [bytes(asn1_cms.ContentType("signed_data").dump())]})), fail_info=BAD_CHECK,
         text=SIGNATURE_TEXT, reason="contentType attribute does not match"),
    Case("contentType attribute id-envelopedData", scep(raw(change={
        Attr.CONTENT_TYPE.value: [bytes(asn1_cms.ContentType("enveloped_data").dump())]})), fail_info=BAD_CHECK,
         text=SIGNATURE_TEXT, reason="contentType attribute does not match"),
    Case("contentType attribute with two values", scep(raw(change={Attr.CONTENT_TYPE.value: [
        bytes(asn1_cms.ContentType("data").dump()), bytes(asn1_cms.ContentType("data").dump())]})), 400,
         body="exactly one value"),
    Case("no signed attributes at all", scep(lambda env: _no_signed_attributes(env)), 400,
         body="no signed attributes"),
    Case("messageType 0 (reserved)", scep(raw(message_type="0")), fail_info=BAD_REQUEST,
         reason="messageType 0 is not supported"),
    Case("messageType 1", scep(raw(message_type="1")), fail_info=BAD_REQUEST,
         reason="messageType 1 is not supported"),
    Case("messageType 2", scep(raw(message_type="2")), fail_info=BAD_REQUEST,
         reason="messageType 2 is not supported"),
    Case("messageType 5", scep(raw(message_type="5")), fail_info=BAD_REQUEST,
         reason="messageType 5 is not supported"),
    Case("messageType 999", scep(raw(message_type="999")), fail_info=BAD_REQUEST,
         reason="messageType 999 is not supported"),
    Case("messageType 1000 (four digits)", scep(raw(message_type="1000")), 400, body="usable messageType"),
    Case("messageType -1", scep(raw(message_type="-1")), 400, body="usable messageType"),
    Case("messageType empty", scep(raw(message_type="")), 400, body="usable messageType"),
    Case("messageType '19 ' with a space", scep(raw(message_type="19 ")), 400, body="usable messageType"),
    Case("messageType '+19'", scep(raw(message_type="+19")), 400, body="usable messageType"),
    Case("messageType superscript two (str.isdigit, not int)", scep(raw(message_type="\u00b2")), 400,
         body="usable messageType"),
    Case("messageType '019' with a leading zero, read (wrong challenge)", scep(lenient(message_type="019")),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("messageType an INTEGER", scep(raw(change={Attr.MESSAGE_TYPE.value: [b"\x02\x01\x13"]})), 400,
         body="not a valid PrintableString"),
    Case("messageType a UTF8String", scep(raw(change={Attr.MESSAGE_TYPE.value: [
        bytes(core.UTF8String("19").dump())]})), 400, body="not a valid PrintableString"),
    Case("messageType with two values", scep(raw(change={Attr.MESSAGE_TYPE.value: [
        printable("19"), printable("21")]})), 400, body="exactly one value"),
    Case("messageType attribute twice", scep(raw(extra=[attribute(Attr.MESSAGE_TYPE.value, printable("21"))])),
         400, body="appears twice"),
    Case("senderNonce attribute twice", scep(raw(extra=[attribute(Attr.SENDER_NONCE.value, octets(NONCE))])),
         400, body="appears twice"),
    Case("messageDigest attribute twice", scep(raw(extra=[attribute(Attr.MESSAGE_DIGEST.value,
                                                                        octets(b"\x00" * 32))])),
         400, body="appears twice"),
    Case("signingTime attribute twice", scep(raw(extra=[attribute(Attr.SIGNING_TIME.value, utc(NOW))])),
         400, body="appears twice"),
    Case("transactionID empty", scep(raw(change={Attr.TRANSACTION_ID.value: [printable("")]})), 400,
         body="usable transactionID"),
    Case("transactionID of 10 KB", scep(raw(transaction_id="T" * 10_240)), 400, body="usable transactionID"),
    Case("transactionID of 129 characters", scep(raw(transaction_id="T" * 129)), 400,
         body="usable transactionID"),
    Case("transactionID of 128 characters, read (wrong challenge)",
         scep(lenient(transaction_id=uuid.uuid4().hex * 4)), fail_info=BAD_REQUEST, text=CHALLENGE_TEXT,
         reason=R_CHALLENGE),
    Case("transactionID with ESC and CRLF, echoed as sent (wrong challenge)",
         scep(lenient(transaction_id="tx\x1b[2J\r\nforged " + uuid.uuid4().hex)), fail_info=BAD_REQUEST,
         text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("transactionID a UTF8String", scep(raw(change={Attr.TRANSACTION_ID.value: [
        bytes(core.UTF8String("tx-utf8").dump())]})), 400, body="not a valid PrintableString"),
    Case("transactionID an OCTET STRING", scep(raw(change={Attr.TRANSACTION_ID.value: [octets(b"tx-octets")]})),
         400, body="not a valid PrintableString"),
    Case("transactionID with two values", scep(raw(change={Attr.TRANSACTION_ID.value: [
        printable("A"), printable("B")]})), 400, body="exactly one value"),
    Case("senderNonce of 0 octets", scep(raw(nonce=b"")), 400, body="usable senderNonce"),
    Case("senderNonce of 7 octets", scep(raw(nonce=b"1234567")), 400, body="usable senderNonce"),
    Case("senderNonce of 65 octets", scep(raw(nonce=b"n" * 65)), 400, body="usable senderNonce"),
    *(Case(f"senderNonce of {size} octets, read and echoed (wrong challenge)", scep(lenient(nonce=b"n" * size)),
           fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE) for size in (8, 15, 17, 64)),
    Case("senderNonce a PrintableString", scep(raw(change={Attr.SENDER_NONCE.value: [
        printable("0123456789abcdef")]})), 400, body="not a valid OctetString"),
    Case("senderNonce an INTEGER", scep(raw(change={Attr.SENDER_NONCE.value: [
        bytes(core.Integer(1 << 100).dump())]})), 400, body="not a valid OctetString"),
    Case("signingTime three days ahead", scep(raw(change={Attr.SIGNING_TIME.value: [
        utc(NOW + datetime.timedelta(days=3))]})), fail_info=BAD_TIME, reason=R_TIME),
    Case("signingTime 25 hours ago", scep(raw(change={Attr.SIGNING_TIME.value: [
        utc(NOW - datetime.timedelta(hours=25))]})), fail_info=BAD_TIME, reason=R_TIME),
    Case("signingTime 1950 (UTCTime's first year)", scep(raw(change={Attr.SIGNING_TIME.value: [
        utc(datetime.datetime(1950, 1, 1, tzinfo=datetime.UTC))]})), fail_info=BAD_TIME,
         reason="signingTime 1950-01-01T00:00:00+00:00 is more than"),
    Case("signingTime 2049 (UTCTime's last year)", scep(raw(change={Attr.SIGNING_TIME.value: [
        utc(datetime.datetime(2049, 12, 31, tzinfo=datetime.UTC))]})), fail_info=BAD_TIME,
         reason="signingTime 2049-12-31T00:00:00+00:00 is more than"),
    Case("signingTime a GeneralizedTime in 2100", scep(raw(change={Attr.SIGNING_TIME.value: [
        bytes(asn1_cms.Time({"generalized_time": datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC)}).dump())]})),
         fail_info=BAD_TIME, reason="signingTime 2100-01-01T00:00:00+00:00 is more than"),
    Case("signingTime an OCTET STRING", scep(raw(change={Attr.SIGNING_TIME.value: [octets(b"yesterday")]})),
         400, body="not decodable CMS"),
    Case("signingTime a zone-less GeneralizedTime in 1999", scep(raw(change={Attr.SIGNING_TIME.value: [
        b"\x18\x0e19991231235959"]})), fail_info=BAD_TIME, reason="signingTime 1999-12-31T23:59:59+00:00 is more than"),
    Case("signingTime a GeneralizedTime in the year 0000", scep(raw(change={Attr.SIGNING_TIME.value: [
        b"\x18\x0f00000101000000Z"]})), fail_info=BAD_TIME, reason="signingTime lies in the year 0"),
    Case("signer certificate with an unknown public key algorithm", scep(signer_with_unknown_key_algorithm),
         fail_info=BAD_ALG, reason="the signer's public key uses an unsupported algorithm"),
    Case("signingTime absent, read (wrong challenge)", scep(lenient(change={Attr.SIGNING_TIME.value: None})),
         fail_info=BAD_REQUEST, text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("eContent absent (detached): no pkcsPKIEnvelope", scep(raw(content=lambda env, d: None)),
         fail_info=BAD_REQUEST, reason="carries no pkcsPKIEnvelope"),
    Case("eContent empty", scep(raw(content=lambda env, d: b"")), fail_info=BAD_CHECK,
         reason="pkcsPKIEnvelope is not decodable"),
    Case("GET with a SHA-512-signed message, read (wrong challenge)",
         scep(lenient(digest=DigestAlgorithm.SHA512), method="GET"), fail_info=BAD_REQUEST, text=CHALLENGE_TEXT,
         reason=R_CHALLENGE),
]
