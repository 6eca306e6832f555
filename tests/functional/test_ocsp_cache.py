"""Cached OCSP answers: looked up by the request bytes in front of Flask, the views' bytes and headers,
never past a revocation, never for a nonce (RFC 6960 §4.4.1, RFC 5019 §6.2)."""

from __future__ import annotations

import base64
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from asn1crypto import ocsp as asn1_ocsp
from cryptography import x509
from cryptography.x509 import ocsp

from scep_server.ca.responder import DelegatedResponder, responder_policy
from scep_server.runtime import ca_passphrase
from scep_server.service import ocsp as ocsp_service
from scep_server.service.ocsp import OcspAnswer, OcspResponder
from scep_server.service.publishing import RevocationWatch
from scep_server.service.revocation import RevocationService
from tests.support.clocks import FakeClock

from .conftest import Device, ScepTestServer
from .test_ocsp import OCSP_REQUEST, clocked_responder, max_age, post, request_for

OCSP_ENDPOINTS = ("ocsp.ocsp_post", "ocsp.ocsp_post_slash", "ocsp.ocsp_get")


@pytest.fixture
def cert(server: ScepTestServer) -> x509.Certificate:
    return server.enroll(Device(common_name="cached-device"))


def views_unreachable(server: ScepTestServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on the OCSP views fail and requests cannot be parsed: what still gets its answer was
    served from the cache, before Flask."""

    def unreachable(*args: object, **kwargs: object) -> Any:
        raise AssertionError("reached the OCSP view or the request parser")

    app = server.http.application
    for endpoint in OCSP_ENDPOINTS:
        monkeypatch.setitem(app.view_functions, endpoint, unreachable)
    monkeypatch.setattr(ocsp_service, "parse_request", unreachable)


def headers_but_max_age(response: Any) -> list[tuple[str, str]]:
    """The headers that belong to the answer: Cache-Control's max-age counts down, X-Request-Id is the request's."""
    return [(name, value) for name, value in response.headers if name not in ("Cache-Control", "X-Request-Id")]


def with_acceptable_responses(der: bytes) -> bytes:
    """The same question in other bytes: an acceptable-responses extension (RFC 6960 §4.4.3) added."""
    request = asn1_ocsp.OCSPRequest.load(der)
    request["tbs_request"]["request_extensions"] = [
        {"extn_id": "acceptable_responses", "critical": False, "extn_value": ["basic_ocsp_response"]}
    ]
    return bytes(request.dump(force=True))


def test_a_repeated_request_gets_the_same_bytes_and_headers_without_the_view(
    server: ScepTestServer, cert: x509.Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    der = request_for(cert, server.ca.ca_cert)
    _, first = post(server, der)
    views_unreachable(server, monkeypatch)
    for path in ("/ocsp", "/ocsp/"):
        _, again = post(server, der, path)
        assert again.data == first.data
        assert headers_but_max_age(again) == headers_but_max_age(first)
        assert max_age(first) - 1 <= max_age(again) <= max_age(first)
        assert [name for name, _ in again.headers] == [name for name, _ in first.headers]


def test_the_get_form_is_answered_from_the_same_cache(
    server: ScepTestServer, cert: x509.Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    der = request_for(cert, server.ca.ca_cert, "sha256")
    _, first = post(server, der)
    views_unreachable(server, monkeypatch)
    for encoded in (base64.b64encode(der).decode(), base64.urlsafe_b64encode(der).decode().rstrip("=")):
        response = server.http.get(f"/ocsp/{encoded}")
        assert response.status_code == 200 and response.data == first.data
        assert headers_but_max_age(response) == headers_but_max_age(first)


def test_another_encoding_of_the_same_question_reuses_the_signature(
    server: ScepTestServer, cert: x509.Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    der = request_for(cert, server.ca.ca_cert)
    other = with_acceptable_responses(der)
    assert other != der
    _, first = post(server, der)
    assert server.runtime.ocsp.cached(other) is None
    _, second = post(server, other)  # parsed, found under its CertID
    assert second.data == first.data
    views_unreachable(server, monkeypatch)
    assert post(server, other)[1].data == first.data  # and now kept under its own bytes too


def test_a_revocation_makes_the_next_cached_answer_revoked(server: ScepTestServer, cert: x509.Certificate) -> None:
    der = request_for(cert, server.ca.ca_cert, "sha256")
    path = f"/ocsp/{base64.b64encode(der).decode()}"
    good = server.http.get(path)
    assert server.http.get(path).data == good.data
    server.runtime.revocations.revoke(cert.serial_number, reason="cessationOfOperation")
    revoked = server.http.get(path)
    answer = ocsp.load_der_ocsp_response(revoked.data)
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert answer.revocation_reason is x509.ReasonFlags.cessation_of_operation
    assert server.http.get(path).data == revoked.data  # the revoked answer is kept in turn


def test_a_revocation_elsewhere_outdates_the_cache_once_the_watch_counts_again(
    server: ScepTestServer, cert: x509.Certificate
) -> None:
    """As in another gunicorn worker: no notify, only the store's revocation count, read once per interval."""
    runtime, config = server.runtime, server.runtime.config
    ticks = FakeClock(0.0)
    watch = RevocationWatch(runtime.store, interval=1.0, clock=ticks)
    delegated = DelegatedResponder(config.ca_dir, runtime.ca, ca_passphrase(config),
                                   responder_policy(config.ca.ocsp_subject, config.ca.ocsp_validity_days))  # fmt: skip
    responder = OcspResponder(runtime.ca, runtime.store, delegated, watch)
    der = request_for(cert, server.ca.ca_cert)
    good = responder.respond(der)
    assert _der_of(responder.cached(der)) == good.der  # its max-age counts down with the wall clock
    RevocationService(runtime.store, issuer=runtime.ca.issuer_name).revoke(cert.serial_number, reason="superseded")
    ticks.advance(0.5)
    assert _der_of(responder.cached(der)) == good.der  # not counted yet: within the watch interval, as before
    ticks.advance(0.5)
    assert responder.cached(der) is None
    answer = ocsp.load_der_ocsp_response(responder.respond(der).der)
    assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED


def test_a_nonce_request_gets_its_own_nonce_even_when_the_question_is_cached(
    server: ScepTestServer, cert: x509.Certificate
) -> None:
    plain = request_for(cert, server.ca.ca_cert)
    post(server, plain)
    assert server.runtime.ocsp.cached(plain) is not None
    for _ in range(2):
        nonce = os.urandom(16)
        with_nonce = request_for(cert, server.ca.ca_cert, nonce=nonce)
        answer, _ = post(server, with_nonce)
        assert answer.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == nonce
        assert server.runtime.ocsp.cached(with_nonce) is None  # a nonce makes an answer unique: never kept


def test_the_same_nonce_twice_is_answered_by_the_view_each_time(
    server: ScepTestServer, cert: x509.Certificate, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_nonce = request_for(cert, server.ca.ca_cert, nonce=b"r" * 16)
    post(server, with_nonce)
    views_unreachable(server, monkeypatch)
    response = server.http.post("/ocsp", data=with_nonce, content_type=OCSP_REQUEST)
    assert response.status_code == 500  # it reached the (now failing) view: nothing was served from a cache


def test_a_kept_answer_ages_and_is_signed_again_after_half_its_validity(server: ScepTestServer) -> None:
    clock = FakeClock(datetime.now(UTC))
    responder = clocked_responder(server, clock)
    der = request_for(server.enroll(Device()), server.ca.ca_cert)
    first = responder.respond(der)
    clock.now += timedelta(minutes=10)
    later = responder.cached(der)
    assert later is not None and later.der == first.der
    assert first.max_age is not None and later.max_age == first.max_age - 600
    clock.now += timedelta(minutes=20)
    assert responder.cached(der) is None  # half of the hour's validity is over
    assert responder.respond(der).der != first.der


def test_requests_the_views_refuse_are_left_to_them(server: ScepTestServer, cert: x509.Certificate) -> None:
    der = request_for(cert, server.ca.ca_cert)
    post(server, der)
    limit = server.runtime.config.max_body_bytes
    assert server.http.post("/ocsp", data=der + b"\0" * limit, content_type=OCSP_REQUEST).status_code == 413
    assert server.http.put("/ocsp", data=der).status_code == 405
    assert server.http.get("/ocsp").status_code == 405
    head = server.http.head(f"/ocsp/{base64.b64encode(der).decode()}")
    assert head.status_code == 200 and head.headers["Content-Type"] == "application/ocsp-response"


def _der_of(answer: OcspAnswer | None) -> bytes | None:
    return None if answer is None else answer.der
