"""The intune validator over a stand-in client and notifier: fail closed, and every outcome reported."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography import x509

from scep_server.challenge import IssuedCertificate
from scep_server.challenge.intune import IntuneChallenge
from scep_server.errors import (
    ChallengeRejected,
    IntuneAuthError,
    IntuneError,
    IntuneProtocolError,
    IntuneUnavailable,
    ValidatorUnavailable,
)
from scep_server.intune.messages import ScepActionResult

from .conftest import MakeRequest


@dataclass
class FakeClient:
    answer: str | Exception = "Success"
    notified: list[dict[str, Any]] = field(default_factory=list)

    def validate_request(self, transaction_id: str, csr_der: bytes) -> ScepActionResult:
        return self._result()

    def send_success_notification(self, **fields: Any) -> ScepActionResult:
        self.notified.append(fields)
        return self._result()

    def _result(self) -> ScepActionResult:
        if isinstance(self.answer, Exception):
            raise self.answer
        return ScepActionResult(self.answer, "", "activity-1")


@dataclass
class FakeNotifier:
    queued: list[dict[str, Any]] = field(default_factory=list)

    def enqueue_failure(self, **fields: Any) -> int:
        self.queued.append(fields)
        return len(self.queued)


def _validator(client: FakeClient, notifier: FakeNotifier | None = None) -> IntuneChallenge:
    return IntuneChallenge(client, notifier or FakeNotifier(), ca_configuration="scep.example\\Corp CA")


def test_success_accepts(make_request: MakeRequest) -> None:
    _validator(FakeClient()).validate(make_request(b"intune-challenge"))


def test_any_other_code_refuses_with_that_code(make_request: MakeRequest) -> None:
    with pytest.raises(ChallengeRejected) as refused:
        _validator(FakeClient("ChallengeExpired")).validate(make_request(b"old"))
    assert refused.value.reason == "ChallengeExpired"


@pytest.mark.parametrize(("error", "reason"), [
    (IntuneAuthError("AADSTS7000215"), "EntraIdAuthenticationFailed"),
    (IntuneProtocolError("no code"), "IntuneProtocolError"),
])
def test_unusable_answers_refuse(make_request: MakeRequest, error: IntuneError, reason: str) -> None:
    with pytest.raises(ChallengeRejected) as refused:
        _validator(FakeClient(error)).validate(make_request(b"x"))
    assert refused.value.reason == reason
    assert "AADSTS" not in refused.value.public_text


def test_unreachable_intune_is_undecided(make_request: MakeRequest) -> None:
    with pytest.raises(ValidatorUnavailable) as undecided:
        _validator(FakeClient(IntuneUnavailable("503", retry_after=30.0))).validate(make_request(b"x"))
    assert undecided.value.retry_after == 30.0


def test_success_notification_names_the_ca(make_request: MakeRequest, certificate: x509.Certificate) -> None:
    client = FakeClient()
    request = make_request(b"x")
    _validator(client).notify_issued(request, IssuedCertificate(certificate, certificate, "Corp CA"))
    (sent,) = client.notified
    assert sent["transaction_id"] == "tx-1" and sent["csr_der"] == request.csr_der
    assert sent["ca_configuration"] == "scep.example\\Corp CA" and sent["certificate_authority"] == "Corp CA"
    assert sent["issuing_ca"] == certificate.issuer.rfc4514_string()


@pytest.mark.parametrize("answer", ["Failure", IntuneUnavailable("timeout")])
def test_unacknowledged_success_means_do_not_deliver(
    make_request: MakeRequest, certificate: x509.Certificate, answer: str | Exception
) -> None:
    issued = IssuedCertificate(certificate, certificate, "CA")
    with pytest.raises(ValidatorUnavailable):
        _validator(FakeClient(answer)).notify_issued(make_request(b"x"), issued)


def test_failures_go_to_the_notifier(make_request: MakeRequest) -> None:
    notifier = FakeNotifier()
    request = make_request(b"x")
    _validator(FakeClient(), notifier).notify_failed(request, 0x80004005, "policy refused the CSR")
    assert notifier.queued == [{"transaction_id": "tx-1", "csr_der": request.csr_der, "hresult": 0x80004005,
                                "description": "policy refused the CSR", "profile": request.profile}]


def test_renewals_are_asked_about_too() -> None:
    assert IntuneChallenge.validates_renewals is True
