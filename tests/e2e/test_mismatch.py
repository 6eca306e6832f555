"""A device that asks for more than its challenge allows gets nothing (intune-api.md §5, §8).

Each case tampers with one thing the emulator compares (subject, SAN, key length), or presents a
challenge that is expired, forged or already used. Expected every time: the emulator's code, a SCEP
FAILURE badRequest with a generic text, no certificate in the store, and the code in the server's log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from scep_server.intune.contract import ChallengeSpec
from scep_server.pki.names import parse_name
from scep_server.scep.types import FailInfo, PKIStatus
from scep_server.simulator.device import (
    CertificateRequest,
    Device,
    Enrollment,
    build_csr,
    generate_key,
    self_signed_signer,
)
from scep_server.simulator.matrix import DeviceIdentity, Row

from .conftest import Stack, stored_with_subject

pytestmark = pytest.mark.e2e
PROFILE = "intune"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What the device presents: its CSR's contents, key size and challenge."""

    request: CertificateRequest
    key_size: int
    challenge: str


def _spec(**changes: object) -> ChallengeSpec:
    spec = Row("mismatch").challenge_spec(DeviceIdentity.random(), "sha256")
    return replace(spec, **changes)  # type: ignore[arg-type]


def _honest(stack: Stack, spec: ChallengeSpec) -> Attempt:
    return Attempt(CertificateRequest.from_spec(spec), spec.key_size, stack.admin.mint_challenge(spec))


def _enroll(stack: Stack, attempt: Attempt) -> Enrollment:
    key = generate_key(attempt.key_size)
    csr = build_csr(key, attempt.request, attempt.challenge)
    with Device(stack.server.url(PROFILE), timeout=5.0, poll_interval=0.2) as device:
        return device.enroll(device.discover(), csr, self_signed_signer(key, csr.subject))


def _other_subject(stack: Stack, spec: ChallengeSpec) -> Attempt:
    attempt = _honest(stack, spec)
    return replace(attempt, request=replace(attempt.request, subject=parse_name("CN=administrator")))


def _other_san(stack: Stack, spec: ChallengeSpec) -> Attempt:
    attempt = _honest(stack, spec)
    return replace(attempt, request=replace(attempt.request, sans=(("upn", "admin@contoso.onmicrosoft.com"),)))


def _weaker_key(stack: Stack, spec: ChallengeSpec) -> Attempt:
    return replace(_honest(stack, spec), key_size=1024)


def _expired(stack: Stack, spec: ChallengeSpec) -> Attempt:
    return _honest(stack, replace(spec, expires_in=0))


def _forged(stack: Stack, spec: ChallengeSpec) -> Attempt:
    forger = ec.generate_private_key(ec.SECP256R1())
    challenge = stack.emulator.emulator.codec.seal(spec, time.time(), signing_key=forger)
    return Attempt(CertificateRequest.from_spec(spec), spec.key_size, challenge)


CASES: dict[str, tuple[Callable[[Stack, ChallengeSpec], Attempt], str]] = {
    "subject": (_other_subject, "SubjectNameMismatch"),
    "SAN": (_other_san, "SubjectAltNameMismatch"),
    "key length": (_weaker_key, "KeyLengthMismatch"),
    "expired challenge": (_expired, "ChallengeExpired"),
    "forged challenge": (_forged, "SignatureValidationFailed"),
}


def _assert_refused(stack: Stack, enrollment: Enrollment, code: str, subjects: list[str], before: int) -> None:
    assert enrollment.status is PKIStatus.FAILURE, enrollment.describe()
    assert enrollment.fail_info is FailInfo.BAD_REQUEST and enrollment.certificate is None
    assert enrollment.fail_info_text == "challenge not accepted"  # Intune's code is for the operator only
    answers = [v["code"] for v in stack.admin.validations() if v["transactionId"] == enrollment.transaction_id]
    assert answers == [code]
    assert stack.log_lines(f"transaction={enrollment.transaction_id}", f"code={code}")
    stored = stack.certificates()
    assert len(stored) == before
    assert not any(stored_with_subject(stored, subject) for subject in subjects)


@pytest.mark.parametrize("case", list(CASES))
def test_tampered_request_is_refused(stack: Stack, clean_faults: None, case: str) -> None:
    tamper, code = CASES[case]
    spec = _spec()
    attempt = tamper(stack, spec)
    before = len(stack.certificates())
    enrollment = _enroll(stack, attempt)
    _assert_refused(stack, enrollment, code, [spec.subject, attempt.request.subject.rfc4514_string()], before)


def test_reused_challenge_is_refused(stack: Stack, clean_faults: None) -> None:
    spec = _spec()
    attempt = _honest(stack, spec)
    first = _enroll(stack, attempt)
    assert first.status is PKIStatus.SUCCESS and first.certificate is not None, first.describe()
    before = len(stack.certificates())
    second = _enroll(stack, attempt)  # a new key, so a new transaction, with the same challenge
    assert second.transaction_id != first.transaction_id
    _assert_refused(stack, second, "BadCertificateRequestIdInChallenge", [], before)
    assert len(stored_with_subject(stack.certificates(), spec.subject)) == 1
