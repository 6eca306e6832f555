"""The story of an enrollment against the Intune emulator: what the server received, what Intune answered
(with the activity ids the emulator saw), what was issued and who was told, in order; and the search."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_server.errors import FailInfo, StoreUnavailable
from scep_server.intune.client import IntuneClient
from scep_server.intune.contract import ChallengeSpec
from scep_server.jobs.tasks import DeferredValidations
from scep_server.scep.types import PKIStatus
from scep_server.service.enrollments import EnrollmentSearch
from scep_server.service.intune_outbox import NotificationOutbox

from .conftest import Device, ScepTestServer
from .intune_env import IntuneEnv, csr_for, enroll


def _story(env: IntuneEnv, transaction_id: str) -> dict[str, Any]:
    story = env.server.runtime.enrollments.story(transaction_id, "intune")
    assert story is not None
    return story


def _names(story: dict[str, Any]) -> list[str]:
    return [step["step"] for step in story["steps"]]


def _one(story: dict[str, Any], name: str) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [step for step in story["steps"] if step["step"] == name]
    (step,) = steps
    return step


def _activity_of(records: list[dict[str, Any]], transaction_id: str) -> str:
    (record,) = [record for record in records if record["transactionId"] == transaction_id]
    return str(record["clientRequestId"])


def test_an_issued_enrollment_tells_its_story_in_order(intune_env: IntuneEnv) -> None:
    reply, device, built = enroll(intune_env, subject="CN=story@contoso.com")
    assert reply.status is PKIStatus.SUCCESS
    certificate = reply.certificate_for(device.key.public_key())
    story = _story(intune_env, built.transaction_id)

    assert _names(story) == ["received", "validated", "issued", "notified", "answered"]
    times = [datetime.fromisoformat(step["at"]) for step in story["steps"]]
    assert times == sorted(times)
    validated, notified = _one(story, "validated"), _one(story, "notified")
    assert (validated["outcome"], validated["intune_code"]) == ("accepted", "Success")
    assert validated["activity_id"] == _activity_of(intune_env.state.validations, built.transaction_id)
    assert (notified["outcome"], notified["intune_code"]) == ("acknowledged", "Success")
    assert notified["activity_id"] == _activity_of(intune_env.state.notifications, built.transaction_id)
    assert notified["activity_id"] != validated["activity_id"]
    assert _one(story, "issued")["outcome"] == f"{certificate.serial_number:x}"
    assert _one(story, "answered")["outcome"] == "SUCCESS"
    assert story["transaction"]["state"] == "issued"
    assert story["transaction"]["serial"] == f"{certificate.serial_number:x}"
    assert story["transaction"]["intune_code"] == "Success"
    assert story["certificate"]["serial"] == f"{certificate.serial_number:x}"
    assert story["certificate"]["subject"] == "CN=story@contoso.com"
    assert story["notifications"] == []


def test_a_refusal_shows_intunes_code_and_is_found_by_it(intune_env: IntuneEnv) -> None:
    accepted, _, accepted_built = enroll(intune_env, subject="CN=accepted")
    refused, _, built = enroll(intune_env, spec=ChallengeSpec(subject="CN=late", expires_in=0))
    assert accepted.status is PKIStatus.SUCCESS
    assert refused.status is PKIStatus.FAILURE and refused.fail_info is FailInfo.BAD_REQUEST
    story = _story(intune_env, built.transaction_id)

    assert _names(story) == ["received", "validated", "failed"]
    validated = _one(story, "validated")
    assert (validated["outcome"], validated["intune_code"]) == ("refused", "ChallengeExpired")
    assert validated["activity_id"] == _activity_of(intune_env.state.validations, built.transaction_id)
    assert validated["detail"]  # Intune's errorDescription
    assert _one(story, "failed")["outcome"] == "FAILURE:BAD_REQUEST"
    assert story["transaction"]["fail_info"] == "badRequest"
    assert story["certificate"] is None

    enrollments = intune_env.server.runtime.enrollments
    found = enrollments.search(EnrollmentSearch(intune_code="ChallengeExpired")).items
    assert [item["transaction_id"] for item in found] == [built.transaction_id]
    assert found[0]["intune_code"] == "ChallengeExpired" and found[0]["state"] == "failed"
    issued = enrollments.search(EnrollmentSearch(intune_code="Success", outcome="issued")).items
    assert [item["transaction_id"] for item in issued] == [accepted_built.transaction_id]
    failed = enrollments.search(EnrollmentSearch(fail_info="badRequest", profile="intune")).items
    assert [item["transaction_id"] for item in failed] == [built.transaction_id]


def test_a_failure_notification_is_a_step_of_each_delivery_attempt(intune_env: IntuneEnv) -> None:
    """Intune accepts the challenge, the policy refuses the weak key: Intune is told through the outbox,
    which fails while Intune is down and succeeds once it is back."""
    spec = ChallengeSpec(subject="CN=weak-key-story", key_size=1024)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    device = Device(key=weak, common_name="weak-signer")
    built = intune_env.server.pkcsreq(device, csr=csr_for(spec, weak, intune_env.state.mint_challenge(spec)))
    assert intune_env.server.send(built, device, profile="intune").status is PKIStatus.FAILURE
    intune_env.emulator.stop()
    intune_env.server.runtime.background.run_once()  # Intune down: not delivered
    intune_env.emulator.start()
    _deliver_outbox_as_if_due(intune_env)
    story = _story(intune_env, built.transaction_id)

    assert _names(story) == ["received", "validated", "failed", "notification_failed", "notified"]
    failed_attempt, delivered = _one(story, "notification_failed"), _one(story, "notified")
    assert failed_attempt["outcome"] == "retrying" and failed_attempt["intune_code"] is None
    assert failed_attempt["detail"].startswith("failureNotification (hResult 0x80070057), attempt 1: ")
    assert (delivered["outcome"], delivered["intune_code"]) == ("acknowledged", "Success")
    assert delivered["detail"] == "failureNotification (hResult 0x80070057)"
    assert delivered["activity_id"] == _activity_of(intune_env.state.notifications, built.transaction_id)
    (notification,) = story["notifications"]
    assert (notification["kind"], notification["state"], notification["attempts"]) == (
        "failureNotification", "delivered", 1
    )
    assert notification["hresult"] == 0x80070057


def test_a_deferred_enrollment_shows_each_validation_attempt(intune_env: IntuneEnv) -> None:
    spec = ChallengeSpec(subject="CN=deferred-story")
    device = Device(common_name="deferred-signer")
    built = intune_env.server.pkcsreq(device, csr=csr_for(spec, device.key, intune_env.state.mint_challenge(spec)))
    intune_env.emulator.stop()
    assert intune_env.server.send(built, device, profile="intune-pending").status is PKIStatus.PENDING
    story = intune_env.server.runtime.enrollments.story(built.transaction_id)
    assert story is not None and story["transaction"]["deferred"] is True
    assert _names(story) == ["received", "validated", "pending"]
    unavailable = _one(story, "validated")
    assert unavailable["outcome"] == "unavailable" and unavailable["intune_code"] is None
    assert unavailable["activity_id"]  # the call's id, though Intune never answered it
    intune_env.emulator.start()
    runtime = intune_env.server.runtime
    later = datetime.now(UTC) + timedelta(hours=1)
    assert DeferredValidations(runtime.store, runtime.service.issuance, runtime.profiles).run_once(now=later) == 1
    story = runtime.enrollments.story(built.transaction_id, "intune-pending")
    assert story is not None
    assert _names(story) == ["received", "validated", "pending", "validated", "issued", "notified"]
    assert [step["outcome"] for step in story["steps"] if step["step"] == "validated"] == ["unavailable", "accepted"]
    assert story["transaction"]["intune_code"] == "Success" and story["transaction"]["state"] == "issued"


def test_an_unwritable_journal_does_not_fail_the_enrollment(
    intune_env: IntuneEnv, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unavailable(**_: object) -> None:
        raise StoreUnavailable("database is locked")

    monkeypatch.setattr(intune_env.server.runtime.store.steps, "record_step", unavailable)
    caplog.set_level(logging.ERROR)
    reply, _, built = enroll(intune_env, subject="CN=unjournalled")
    assert reply.status is PKIStatus.SUCCESS
    assert "the validated step of transaction" in caplog.text and "the notified step" in caplog.text
    story = _story(intune_env, built.transaction_id)
    assert _names(story) == ["received", "issued", "answered"]


def _deliver_outbox_as_if_due(env: IntuneEnv) -> None:
    intune_client = IntuneClient(env.config.intune)
    try:
        later = datetime.now(UTC) + timedelta(hours=2)
        assert NotificationOutbox(env.server.runtime.store, intune_client).deliver_due(now=later) == 1
    finally:
        intune_client.close()


def test_a_request_issued_in_one_step_is_received_first(server: ScepTestServer) -> None:
    """A static profile decides and stores a new transaction in one step, at its end: the story still
    starts when the request arrived."""
    started = datetime.now(UTC)
    device = Device(common_name="one-step")
    certificate = server.enroll(device)
    [found] = server.runtime.enrollments.search(EnrollmentSearch(profile="default")).items
    story = server.runtime.enrollments.story(found["transaction_id"], "default")
    assert story is not None
    names = [step["step"] for step in story["steps"]]
    assert names[0] == "received" and names.index("issued") > 0
    received = datetime.fromisoformat(story["steps"][0]["at"])
    assert started <= received <= datetime.fromisoformat(_at(story, "issued"))
    assert story["certificate"]["serial"] == f"{certificate.serial_number:x}"


def _at(story: dict[str, Any], name: str) -> str:
    return str(next(step["at"] for step in story["steps"] if step["step"] == name))
