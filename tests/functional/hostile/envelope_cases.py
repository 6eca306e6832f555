"""The EnvelopedData table: a pkcsPKIEnvelope the RA cannot or must not open (RFC 3218 §2.3: one answer)."""

from __future__ import annotations

import os

from asn1crypto import core

from scep_server.scep.types import ContentCipher, MessageType
from tests.functional.hostile.csrs import ca_name, inner_typed, issuer_serial
from tests.functional.hostile.envelopes import (
    ciphertext,
    content_algorithm,
    encrypted_key,
    garbled_ra_then_ra,
    inner_content_type,
    iv,
    kari,
    kekri,
    key_transport_oaep,
    pwri,
    recipients,
    reenveloped,
    rid_key_identifier,
    rid_serial,
    signed_as_envelope,
    stranger_then_ra,
    wrapped,
)
from tests.functional.hostile.messages import csr_der, octets, raw, sealed, tlv
from tests.functional.hostile.support import (
    BAD_ALG,
    BAD_CHECK,
    BAD_REQUEST,
    CHALLENGE_TEXT,
    R_BLOCKS,
    R_CHALLENGE,
    R_CSR,
    R_IV,
    R_NOT_FOR_US,
    R_PADDING,
    R_UNWRAP,
    WRONG,
    Case,
    scep,
)

ENVELOPE_CASES = [
    Case("encrypted to the CA certificate, not the RA",
         scep(raw(content=lambda env, d: sealed(env, csr_der(d.csr()), recipient=env.server.ca.ca_cert))),
         fail_info=BAD_CHECK, reason=R_NOT_FOR_US),
    Case("recipient serial of the RA with one bit flipped", scep(raw(content=reenveloped(rid_serial))),
         fail_info=BAD_CHECK, reason=R_NOT_FOR_US),
    Case("recipient a subjectKeyIdentifier the RA does not have", scep(raw(content=reenveloped(rid_key_identifier))),
         fail_info=BAD_CHECK, reason=R_NOT_FOR_US),
    Case("wrapped content key empty", scep(raw(content=reenveloped(encrypted_key(lambda env: b"")))),
         fail_info=BAD_CHECK, reason=R_UNWRAP),
    Case("wrapped content key longer than the RSA modulus",
         scep(raw(content=reenveloped(encrypted_key(lambda env: os.urandom(257))))), fail_info=BAD_CHECK,
         reason=R_UNWRAP),
    Case("wrapped content key all 0xff", scep(raw(content=reenveloped(encrypted_key(lambda env: b"\xff" * 256)))),
         fail_info=BAD_CHECK, reason=R_UNWRAP),
    Case("wrapped content key of 15 octets for AES-128", scep(raw(content=reenveloped(encrypted_key(wrapped(15))))),
         fail_info=BAD_CHECK, reason="content-encryption key has 15 bytes, not 16"),
    Case("wrapped content key of 32 octets for AES-128", scep(raw(content=reenveloped(encrypted_key(wrapped(32))))),
         fail_info=BAD_CHECK, reason="content-encryption key has 32 bytes, not 16"),
    Case("right-size content key, but not the one used", scep(raw(content=reenveloped(encrypted_key(wrapped(16))))),
         fail_info=BAD_CHECK, reason=(R_PADDING, R_CSR)),
    Case("RSAES-OAEP declared for a PKCS#1 v1.5 wrapped key", scep(raw(content=reenveloped(key_transport_oaep))),
         fail_info=BAD_CHECK, reason=R_UNWRAP),
    Case("content cipher RC2", scep(raw(content=reenveloped(content_algorithm({
        "algorithm": "rc2", "parameters": {"rc2_parameter_version": 58, "iv": os.urandom(8)}})))), fail_info=BAD_ALG,
         reason="content encryption rc2 is not supported"),
    Case("content cipher RC4", scep(raw(content=reenveloped(content_algorithm({"algorithm": "rc4"})))),
         fail_info=BAD_ALG, reason="content encryption rc4 is not supported"),
    Case("content cipher AES-128-GCM", scep(raw(content=reenveloped(content_algorithm({
        "algorithm": "aes128_gcm", "parameters": core.Any.load(tlv(0x30, octets(os.urandom(12)) + b"\x02\x01\x10"))
    })))),
         fail_info=BAD_ALG, reason="content encryption aes128_gcm is not supported"),
    Case("content cipher AES-128-ECB", scep(raw(content=reenveloped(content_algorithm({"algorithm": "aes128_ecb"})))),
         fail_info=BAD_ALG, reason="content encryption aes128_ecb is not supported"),
    Case("content cipher an unknown OID", scep(raw(content=reenveloped(content_algorithm({
        "algorithm": "1.3.6.1.4.1.99999.1", "parameters": core.OctetString(os.urandom(16))})))), fail_info=BAD_ALG,
         reason="content encryption 1.3.6.1.4.1.99999.1 is not supported"),
    Case("DES on the legacy profile with garbage inside",
         scep(raw(content=lambda env, d: sealed(env, os.urandom(40), ContentCipher.DES)), "legacy"),
         fail_info=BAD_CHECK, reason=R_CSR),
    Case("IV of 8 octets for AES", scep(raw(content=reenveloped(iv(8)))), fail_info=BAD_CHECK, reason=R_IV),
    Case("IV of 0 octets", scep(raw(content=reenveloped(iv(0)))), fail_info=BAD_CHECK, reason=R_IV),
    Case("IV of 32 octets", scep(raw(content=reenveloped(iv(32)))), fail_info=BAD_CHECK, reason=R_IV),
    Case("IV absent", scep(raw(content=reenveloped(content_algorithm({"algorithm": "aes128_cbc"})))),
         fail_info=BAD_CHECK, reason=R_IV),
    Case("ciphertext one octet short", scep(raw(content=reenveloped(ciphertext(lambda c: c[:-1])))),
         fail_info=BAD_CHECK, reason=R_BLOCKS),
    Case("ciphertext without its last block", scep(raw(content=reenveloped(ciphertext(lambda c: c[:-16])))),
         fail_info=BAD_CHECK, reason=(R_PADDING, R_CSR)),
    Case("ciphertext with an extra random block", scep(raw(content=reenveloped(ciphertext(
        lambda c: c + os.urandom(16))))), fail_info=BAD_CHECK, reason=(R_PADDING, R_CSR)),
    Case("ciphertext empty", scep(raw(content=reenveloped(ciphertext(lambda c: b"")))), fail_info=BAD_CHECK,
         reason=R_BLOCKS),
    Case("ciphertext absent", scep(raw(content=reenveloped(ciphertext(lambda c: None)))), fail_info=BAD_CHECK,
         reason=R_IV),
    Case("no recipientInfos", scep(raw(content=reenveloped(recipients(lambda env, e: [])))), fail_info=BAD_CHECK,
         reason=R_NOT_FOR_US),
    Case("a stranger's recipientInfo before the RA's, read (wrong challenge)",
         scep(raw(content=reenveloped(recipients(stranger_then_ra), challenge=WRONG))), fail_info=BAD_REQUEST,
         text=CHALLENGE_TEXT, reason=R_CHALLENGE),
    Case("two recipientInfos for the RA, the first garbled",
         scep(raw(content=reenveloped(recipients(garbled_ra_then_ra)))), fail_info=BAD_CHECK,
         reason=("the content-encryption key", R_PADDING, R_CSR)),  # implicit rejection: any key length
    Case("KeyAgreeRecipientInfo only", scep(raw(content=reenveloped(recipients(kari)))), fail_info=BAD_CHECK,
         reason=R_NOT_FOR_US),
    Case("KEKRecipientInfo only", scep(raw(content=reenveloped(recipients(kekri)))), fail_info=BAD_CHECK,
         reason=R_NOT_FOR_US),
    Case("PasswordRecipientInfo only", scep(raw(content=reenveloped(recipients(pwri)))), fail_info=BAD_CHECK,
         reason=R_NOT_FOR_US),
    Case("encryptedContentInfo contentType id-signedData", scep(raw(content=reenveloped(inner_content_type))),
         fail_info=BAD_CHECK, reason="the encrypted content is not of type data"),
    Case("pkcsPKIEnvelope is a SignedData", scep(raw(content=signed_as_envelope)), fail_info=BAD_CHECK,
         reason="pkcsPKIEnvelope is not an EnvelopedData"),
    Case("pkcsPKIEnvelope is random octets", scep(raw(content=lambda env, d: os.urandom(200))), fail_info=BAD_CHECK,
         reason="pkcsPKIEnvelope is not decodable"),
    Case("PKCSReq whose envelope holds an IssuerAndSerialNumber",
         scep(raw(content=lambda env, d: sealed(env, issuer_serial(ca_name, 5)(env, d)))), fail_info=BAD_CHECK,
         reason=R_CSR),
    Case("GetCert whose envelope holds a CSR", scep(inner_typed(MessageType.GET_CERT, lambda env, d: csr_der(
        d.csr()))), fail_info=BAD_CHECK, reason="GET_CERT content: ValueError"),
    Case("CertPoll whose envelope holds a CSR", scep(inner_typed(MessageType.CERT_POLL, lambda env, d: csr_der(
        d.csr()))), fail_info=BAD_CHECK, reason="CERT_POLL content: ValueError"),
    Case("GetCRL whose envelope is empty", scep(inner_typed(MessageType.GET_CRL, lambda env, d: b"")),
         fail_info=BAD_CHECK, reason="GET_CRL content: ValueError"),
]
