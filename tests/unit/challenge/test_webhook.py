"""The webhook validator's documents, read against their published schemas, and its URL rules."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime, timedelta

import jsonschema  # type: ignore[import-untyped]
import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from scep_server.ca.policy import IssuancePolicy
from scep_server.challenge import IssuanceNarrowing, ValidationRequest
from scep_server.challenge.webhook import url_problem
from scep_server.challenge.webhook_messages import (
    INVALID_ANSWER,
    WIDENED,
    Answer,
    narrowing_for,
    read_answer,
    request_body,
    request_document,
)
from scep_server.challenge.webhook_schema import ANSWER_SCHEMA, REQUEST_SCHEMA
from scep_server.errors import BadRequest, ChallengeRejected
from scep_server.pki.sans import UPN_OID
from tests.support import pki

SENT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
UPN = x509.OtherName(UPN_OID, core.UTF8String("alice@corp.example").dump())
NAMES: list[x509.GeneralName] = [
    x509.DNSName("device.corp.example"),
    x509.RFC822Name("alice@corp.example"),
    x509.UniformResourceIdentifier("urn:device:42"),
    x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
    UPN,
]


def _request(csr: x509.CertificateSigningRequest, *, renewal: bool = False) -> ValidationRequest:
    return ValidationRequest("corp", "tx-9", csr, csr.public_bytes(Encoding.DER), None, renewal=renewal)


def test_the_request_describes_the_csr_and_meets_its_schema() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    csr = pki.csr(key, "CN=device,O=Corp", sans=NAMES, challenge="otp-1234",
                  usage=pki.key_usage("digital_signature"))
    document = request_document(_request(csr, renewal=True), SENT)
    jsonschema.validate(document, REQUEST_SCHEMA)
    assert document["message_type"] == "RenewalReq" and document["requester_ip"] is None
    assert document["subject"] == "CN=device,O=Corp"
    assert document["key"] == {"type": "ec", "size": 384, "curve": "P-384"}
    assert document["challenge"] == "otp-1234"
    assert document["sent_at"] == "2025-03-01T12:00:00Z"
    assert document["sans"] == [
        {"type": "dns", "value": "device.corp.example"}, {"type": "email", "value": "alice@corp.example"},
        {"type": "uri", "value": "urn:device:42"}, {"type": "ip", "value": "2001:db8::1"},
        {"type": "upn", "value": "alice@corp.example"},
    ]
    assert {e["name"] for e in document["requested_extensions"]} == {"subject_alternative_name", "key_usage"}
    assert json.loads(request_body(document)) == document


def test_the_body_is_ascii_json() -> None:
    csr = pki.csr(pki.shared_key(), "CN=Zoë", challenge="pässword")
    body = request_body(request_document(_request(csr), SENT))
    assert body.isascii() and json.loads(body)["subject"] == "CN=Zoë"


VALID_ANSWERS = [
    {"allow": True},
    {"allow": False, "reason": "unknown device"},
    {"allow": True, "sans": [{"type": "dns", "value": "device.corp.example"}], "validity_days": 30},
    {"allow": True, "sans": []},
]
INVALID_ANSWERS = [
    {"allow": "true"},
    {"allow": None},
    {"reason": "no allow"},
    {"allow": True, "extra": 1},
    {"allow": True, "reason": 5},
    {"allow": True, "sans": "device.corp.example"},
    {"allow": True, "sans": [{"type": "dns"}]},
    {"allow": True, "sans": [{"type": "dirname", "value": "CN=x"}]},
    {"allow": True, "validity_days": 0},
    {"allow": True, "validity_days": True},
    [{"allow": True}],
    "allow",
]


@pytest.mark.parametrize("document", VALID_ANSWERS, ids=str)
def test_what_the_schema_accepts_is_an_answer(document: dict[str, object]) -> None:
    jsonschema.validate(document, ANSWER_SCHEMA)
    answer = read_answer(json.dumps(document).encode(), 200)
    assert answer.allow is document["allow"]


@pytest.mark.parametrize("document", INVALID_ANSWERS, ids=str)
def test_what_the_schema_refuses_is_no_answer(document: object) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, ANSWER_SCHEMA)
    with pytest.raises(ChallengeRejected) as refused:
        read_answer(json.dumps(document).encode(), 200)
    assert refused.value.reason == INVALID_ANSWER


@pytest.mark.parametrize("body", [b"", b"{", b'{"allow": true, "allow": false}', b'{"allow": true, "x": NaN}',
                                  b"\xff\xfe", b"[" * 100_000])
def test_a_body_that_is_not_strict_json_is_no_answer(body: bytes) -> None:
    with pytest.raises(ChallengeRejected, match=r"\(HTTP 200\) is not JSON"):
        read_answer(body, 200)


def test_a_reason_is_printable_and_at_most_200_characters() -> None:
    answer = read_answer(json.dumps({"allow": False, "reason": "a\x1b[31mb" + "c" * 300}).encode(), 200)
    assert answer.reason is not None and answer.reason.startswith("a\\1B[31mb") and len(answer.reason) == 200


def test_a_narrowing_keeps_the_csrs_own_names() -> None:
    csr = pki.csr(pki.shared_key(), "CN=device", sans=NAMES)
    answer = Answer(True, sans=(("ip", "2001:0db8:0::1"), ("dns", "DEVICE.corp.example")), validity_days=3)
    narrowing = narrowing_for(answer, csr)
    assert narrowing == IssuanceNarrowing(sans=(NAMES[0], NAMES[3]), validity_days=3)
    assert narrowing_for(Answer(True), csr) is None


@pytest.mark.parametrize("sans", [(("dns", "other.corp.example"),), (("email", "ALICE@corp.example"),),
                                  (("upn", "bob@corp.example"),)])
def test_a_name_that_was_not_asked_for_is_a_widening(sans: tuple[tuple[str, str], ...]) -> None:
    csr = pki.csr(pki.shared_key(), "CN=device", sans=NAMES)
    with pytest.raises(ChallengeRejected) as refused:
        narrowing_for(Answer(True, sans=sans), csr)
    assert refused.value.reason == WIDENED


def test_the_policy_applies_a_narrowing_and_refuses_a_widening() -> None:
    policy = IssuancePolicy(
        validity=timedelta(days=365), backdate=timedelta(0), hash_name="sha256", allowed_key_types=frozenset({"rsa"}),
        min_rsa_bits=2048, max_rsa_bits=4096, allowed_curves=frozenset(), key_usage=None, extended_key_usage=None,
        allow_sid_extension=False, crl_url=None, ca_issuers_url=None,
    )
    narrowed = policy.narrowed(sans=[NAMES[0]], validity_days=30)
    assert narrowed.validity == timedelta(days=30) and narrowed.only_sans == frozenset({NAMES[0]})
    assert policy.narrowed(sans=None, validity_days=None) == policy
    with pytest.raises(BadRequest, match="granted a validity of 366 days"):
        policy.narrowed(sans=None, validity_days=366)


@pytest.mark.parametrize(
    ("url", "insecure", "problem"),
    [
        ("https://hooks.corp.example/scep", False, None),
        ("https://127.0.0.1:8443/", False, None),
        ("http://127.0.0.1:8080/hook", True, None),
        ("http://127.0.0.1:8080/hook", False, "is plain http"),
        ("", False, "set the https URL"),
        ("ftp://hooks.corp.example/", True, "is not an https URL"),
        ("https:///path", False, "names no host"),
        ("https://user:pw@hooks.corp.example/", False, "carries credentials"),
        ("https://hooks.corp.example:port/", False, "invalid port"),
        ("https://hooks.corp.example/a b", False, "spaces or control characters"),
    ],
)
def test_the_url_rules(url: str, insecure: bool, problem: str | None) -> None:
    found = url_problem(url, allow_insecure_http=insecure)
    assert found is None if problem is None else (found is not None and problem in found)
    assert "pw" not in (found or "")
