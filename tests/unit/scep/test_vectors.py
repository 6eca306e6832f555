"""Public SCEP messages from other implementations parse, verify and name the right algorithms."""

from __future__ import annotations

from pathlib import Path

import pytest
from asn1crypto import cms as asn1_cms
from asn1crypto import core

from scep_server.errors import RequestError
from scep_server.scep import cms, message
from scep_server.scep.types import Attr, ContentCipher, DigestAlgorithm, MessageType

VECTORS = Path(__file__).parents[2] / "data" / "vectors"


@pytest.mark.parametrize(
    ("name", "message_type", "digest", "cipher", "transaction_id"),
    [
        ("PKCSReq_micromdm.der", MessageType.PKCS_REQ, DigestAlgorithm.SHA1, ContentCipher.DES3,
         "A13090761A30F66664F85D37433D2065E1112BA1"),
        ("micromdm_scepclient_2.1.0_PKCSReq_POST.der", MessageType.PKCS_REQ, DigestAlgorithm.SHA1,
         ContentCipher.DES, "LaOMs03sMkM52/ilUb7nQskaLFc="),
        ("jscep_scep_req2.der", MessageType.PKCS_REQ, DigestAlgorithm.SHA256, ContentCipher.AES128,
         "7XXEY-ERLPU-2JDR9"),
        ("micromdm_scepserver_2.1.0_CertRep.der", MessageType.CERT_REP, DigestAlgorithm.SHA1, ContentCipher.DES,
         "LaOMs03sMkM52/ilUb7nQskaLFc="),
        ("jscep_scep_resp2.der", MessageType.CERT_REP, DigestAlgorithm.SHA256, ContentCipher.AES128,
         "7XXEY-ERLPU-2JDR9"),
    ],
)
def test_foreign_messages_parse_and_verify(
    name: str, message_type: MessageType, digest: DigestAlgorithm, cipher: ContentCipher, transaction_id: str
) -> None:
    der = (VECTORS / name).read_bytes()
    if message_type is MessageType.CERT_REP:
        signed = cms.parse_signed(der)
        found_type = int(str(signed.attribute(Attr.MESSAGE_TYPE, core.PrintableString)))
        found_tid = signed.attribute(Attr.TRANSACTION_ID, core.PrintableString)
    else:
        signed, context = message.read_envelope(der)
        found_type, found_tid = context.message_type, context.transaction_id
    signed.verify()
    assert found_type == message_type and found_tid == transaction_id
    assert signed.digest is digest
    assert signed.content is not None
    algorithm = asn1_cms.ContentInfo.load(signed.content)["content"]["encrypted_content_info"][
        "content_encryption_algorithm"]["algorithm"].native
    assert ContentCipher.from_asn1_name(algorithm) is cipher


def test_certrep_without_sender_nonce_parses() -> None:
    signed = cms.parse_signed((VECTORS / "smallstep_CertRep.der").read_bytes())
    signed.verify()
    assert signed.attribute(Attr.SENDER_NONCE, core.OctetString) is None
    assert signed.attribute(Attr.RECIPIENT_NONCE, core.OctetString) is not None


def test_a_bare_envelope_is_not_a_pki_message() -> None:
    with pytest.raises(RequestError, match="not a SignedData"):
        message.read_envelope((VECTORS / "jscep_scep_req1.der").read_bytes())
