"""Hostile input, table-driven (the second table; test_malformed.py is the first): one case per attack and
per RFC corner case, each asserting the exact HTTP status, for a CertRep the exact pkiStatus FAILURE,
failInfo and failInfoText (RFC 8894 §3.2.1.4, §3.3.2.2), for OCSP the exact response status (RFC 6960
§4.2.1), and that nothing was issued or revoked.

What the server answers, by layer:
- no CertRep possible (unknown operation, undecodable outer SignedData or SCEP attributes): HTTP 400;
- the signature or messageDigest does not verify: badMessageCheck, "message check failed";
- from the RSA step to the parsed inner content (envelope, PKCS#10, IssuerAndSerialNumber,
  IssuerAndSubject), and a PKCSReq signer that does not prove possession: badMessageCheck with the one
  envelope text (no padding oracle, RFC 3218 §2.3);
- an algorithm it does not implement: badAlg; a signingTime too far off: badTime;
- a readable request the policy or the challenge refuses: badRequest; no such certificate or transaction:
  badCertId.

Requests the server is lenient about on purpose (BER, odd but harmless fields, nonce lengths other than
16) carry a wrong challenge: the answer badRequest shows they were read, and nothing is issued. Every
CertRep case also names the cause the server logged (``reason``): the device sees one fixed text, so
that is how a case shows it failed where it meant to. Server bugs are strict xfails (``bug``).

One server for all the tables, without a failure budget (every case here fails on purpose). The tables
live beside this module, one per layer; the request builders in support.py, messages.py, csrs.py and
envelopes.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp
from werkzeug.test import TestResponse

from scep_server.config import SecretSource
from scep_server.errors import FailInfo
from scep_server.scep import cms, message
from scep_server.scep.types import Attr, MessageType, PKIStatus
from scep_server.store import CertStatus
from tests.functional.conftest import Device, make_config, serving
from tests.functional.hostile.admin_cases import ADMIN_CASES
from tests.functional.hostile.csr_cases import CSR_CASES
from tests.functional.hostile.csrs import csr_with
from tests.functional.hostile.envelope_cases import ENVELOPE_CASES
from tests.functional.hostile.http_cases import HTTP_CASES
from tests.functional.hostile.messages import tid
from tests.functional.hostile.ocsp_cases import OCSP_CASES
from tests.functional.hostile.pop_cases import POP_CASES
from tests.functional.hostile.signed_data_cases import OUTER_CASES
from tests.functional.hostile.support import CONFIG, FAILURE_TEXT, TOKEN, Case, Env, Sent


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    config = replace(make_config(tmp_path_factory.mktemp("hostile"), CONFIG), admin_token=SecretSource(value=TOKEN))
    with serving(config) as server:
        holder = Device(key=rsa.generate_private_key(public_exponent=65537, key_size=2048), common_name="holder")
        built = server.pkcsreq(holder, transaction_id="HOLDER-TX")
        reply = server.send(built, holder)
        assert reply.status is PKIStatus.SUCCESS
        revoked = Device(key=rsa.generate_private_key(public_exponent=65537, key_size=2048), common_name="revoked")
        revoked_cert = server.enroll(revoked)
        server.runtime.revocations.revoke(revoked_cert.serial_number, reason="keyCompromise")
        targets = {
            name: f"{server.enroll(Device(common_name=f'admin-{name}')).serial_number:x}"
            for name in ("plain", "json-truncated", "json-text")
        }
        caps = server.http.get("/scep", query_string={"operation": "GetCACaps"}).data
        yield Env(server, holder, reply.certificate_for(holder.key.public_key()), built.transaction_id, revoked,
                  revoked_cert, targets, caps)


CASES = HTTP_CASES + OUTER_CASES + ENVELOPE_CASES + CSR_CASES + POP_CASES + ADMIN_CASES + OCSP_CASES


def _params(cases: Sequence[Case]) -> list[object]:
    return [
        pytest.param(case, id=case.name, marks=[pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else [])
        for case in cases
    ]


# --- the test -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _params(CASES))
def test_hostile_input_gets_the_exact_answer_and_nothing_is_issued(
    env: Env, case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    store = env.server.runtime.store
    issued, revoked = store.count_certificates(), store.count_certificates(status=CertStatus.REVOKED)
    sent = case.send(env)
    response = sent.response
    textual = (response.mimetype or "").startswith("text/")
    shown = response.get_data(as_text=True)[:300] if textual else response.mimetype
    assert response.status_code == case.http_status, shown
    if case.body is not None:
        assert case.body in response.get_data(as_text=True)
    if response.status_code >= 400 and response.status_code != 409:
        assert response.mimetype == "text/plain"
    if case.fail_info is not None:
        _check_cert_rep(env, sent, case.fail_info, case.text or FAILURE_TEXT[case.fail_info])
        if case.reason is not None:
            reasons = (case.reason,) if isinstance(case.reason, str) else case.reason
            assert any(reason in caplog.text for reason in reasons), caplog.text[-600:]
    if case.ocsp_status is not None:
        _check_ocsp(response, case.ocsp_status, case.cert_status)
    if case.expect is not None:
        case.expect(env, response)
    assert store.count_certificates() == issued, "a certificate was issued"
    assert store.count_certificates(status=CertStatus.REVOKED) == revoked, "a certificate was revoked"


def _check_cert_rep(env: Env, sent: Sent, fail_info: FailInfo, text: str) -> None:
    """A CertRep FAILURE (RFC 8894 §3.3.2.2) signed by the RA, for this request, without an envelope."""
    response = sent.response
    assert response.mimetype == "application/x-pki-message"
    reply = cms.parse_signed(response.data)
    reply.verify()
    assert reply.signer.der == env.server.ca.ra_cert.public_bytes(serialization.Encoding.DER)
    assert reply.attribute(Attr.MESSAGE_TYPE, core.PrintableString) == str(int(MessageType.CERT_REP))
    assert reply.attribute(Attr.PKI_STATUS, core.PrintableString) == PKIStatus.FAILURE.value
    assert (reply.attribute(Attr.FAIL_INFO, core.PrintableString), reply.attribute(
        Attr.FAIL_INFO_TEXT, core.UTF8String)) == (str(int(fail_info)), text)
    assert not reply.content  # the pkcsPKIEnvelope MUST be omitted
    assert sent.request is not None
    _, context = message.read_envelope(sent.request)
    assert reply.attribute(Attr.TRANSACTION_ID, core.PrintableString) == context.transaction_id
    assert reply.attribute(Attr.RECIPIENT_NONCE, core.OctetString) == context.sender_nonce


def _check_ocsp(response: TestResponse, status: ocsp.OCSPResponseStatus,
                cert_status: ocsp.OCSPCertStatus | None) -> None:
    assert response.mimetype == "application/ocsp-response"
    answer = ocsp.load_der_ocsp_response(response.data)
    assert answer.response_status is status
    if status is ocsp.OCSPResponseStatus.SUCCESSFUL:
        assert answer.certificate_status is cert_status
    else:
        assert cert_status is None and response.headers["Cache-Control"] == "no-store"


def test_the_table_is_complete() -> None:
    """At least 160 distinct cases; every 200 answer is checked for what it carries."""
    assert len(CASES) >= 160
    assert len({case.name for case in CASES}) == len(CASES)
    for case in CASES:
        checks = [case.fail_info is not None, case.ocsp_status is not None, case.expect is not None]
        assert sum(checks) == (1 if case.http_status == 200 else 0), case.name
        assert (case.reason is not None) == (case.fail_info is not None and case.bug is None), case.name


def test_basic_constraints_ca_true_is_never_granted(env: Env) -> None:
    """A CSR asking for CA:TRUE (and keyCertSign) with the right challenge gets a leaf: the request is ignored,
    not refused (ca/issue.py), so this one is outside the table, where nothing may be issued."""
    device = Device(common_name="wants-to-be-a-ca")
    csr = x509.load_der_x509_csr(csr_with(device.key, device.subject, extensions=[
        x509.BasicConstraints(ca=True, path_length=None),
        x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                      data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                      encipher_only=False, decipher_only=False),
    ]))
    before = env.server.issued_count()
    cert = env.server.enroll(device, csr=csr, transaction_id=tid())
    assert env.server.issued_count() == before + 1
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert not usage.key_cert_sign and not usage.crl_sign
