"""The server with the `intune` validator against the in-process Intune emulator (real MSAL, real TLS).

The background worker is driven by hand (``run_once``) so that every step is deterministic.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from scep_server.ca.authority import init_ca
from scep_server.emulator import EmulatorServer, IntuneEmulator
from scep_server.errors import FailInfo
from scep_server.intune.contract import ChallengeSpec
from scep_server.runtime import build_runtime
from scep_server.scep import client
from scep_server.scep.types import PKIStatus
from scep_server.store import CertStatus
from scep_server.web import create_app
from tests.support import pki

from .conftest import Device, ScepTestServer
from .intune_env import IntuneEnv, csr_for, enroll, intune_config


def test_intune_success_issues_and_notifies_once(intune_env: IntuneEnv) -> None:
    reply, device, built = enroll(intune_env, subject="CN=alice@contoso.com")
    assert reply.status is PKIStatus.SUCCESS
    cert = reply.certificate_for(device.key.public_key())
    notifications = [n for n in intune_env.state.notifications if n["type"] == "success"]
    assert len(notifications) == 1
    body = notifications[0]["notification"]
    assert body["transactionId"] == built.transaction_id
    assert body["certificateThumbprint"] == cert.fingerprint(hashes.SHA1()).hex().upper()
    assert int(body["certificateSerialNumber"], 16) == cert.serial_number
    assert body["certificateExpirationDateUtc"].endswith("Z")


def test_intune_refusal_is_fail_closed_and_logged(
    intune_env: IntuneEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    reply, _, _ = enroll(intune_env, subject="CN=expected", csr_subject="CN=tampered")
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST
    assert reply.fail_info_text == "challenge not accepted"  # Intune's code stays with the operator
    assert "SubjectNameMismatch" in caplog.text
    assert intune_env.server.issued_count() == 0
    assert not [n for n in intune_env.state.notifications if n["type"] == "success"]


def test_tokens_and_discovery_are_cached_over_many_enrollments(intune_env: IntuneEnv) -> None:
    for index in range(100):
        reply, _, _ = enroll(intune_env, subject=f"CN=device-{index}")
        assert reply.status is PKIStatus.SUCCESS
    counters = intune_env.state.counters()
    token_counts = {k: v for k, v in counters.items() if k.startswith("tokens:")}
    assert sorted(token_counts.values()) == [1, 1], token_counts  # one per scope: Graph and Intune
    assert counters["discovery"] == 1
    assert counters["validateRequest"] == 100 and counters["successNotification"] == 100


def test_discovery_is_refreshed_when_the_discovered_host_stops_answering(
    intune_env: IntuneEnv, tmp_path: Path
) -> None:
    with EmulatorServer(intune_env.state, state_dir=tmp_path / "emulator") as moved:
        intune_env.state.set_service_uri("ScepRequestValidationFEService", f"{moved.url}/intune/scep")
        assert enroll(intune_env, subject="CN=before-move")[0].status is PKIStatus.SUCCESS
        intune_env.state.set_service_uri("ScepRequestValidationFEService", f"{intune_env.emulator.url}/intune/scep")
    # `moved` is gone: the cached URL refuses connections, so the client must ask Graph again.
    assert enroll(intune_env, subject="CN=after-move")[0].status is PKIStatus.SUCCESS
    assert intune_env.state.counters()["discovery"] == 2


def test_wrong_secret_issues_nothing_and_names_entra_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    with EmulatorServer(IntuneEmulator(), state_dir=tmp_path / "emulator") as emulator:
        emulator.register_client("7d4c2a10-0000-4000-8000-000000000001", "the-right-secret")
        settings = {**emulator.settings(), "client_secret": "a-wrong-secret"}
        config = intune_config(tmp_path, settings)
        init_ca(config.ca_dir, config.ca, None)
        runtime = build_runtime(config)
        try:
            server = ScepTestServer(runtime, create_app(config, runtime_override=runtime, start_background=False)
                                    .test_client(), tmp_path / "var")
            env = IntuneEnv(emulator, server, config, tmp_path)
            reply, _, _ = enroll(env)
            assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST
            assert server.issued_count() == 0
            assert "Entra ID" in caplog.text and "AADSTS7000215" in caplog.text
            assert "a-wrong-secret" not in caplog.text
        finally:
            runtime.close()


def test_client_certificate_authentication(tmp_path: Path) -> None:
    key = pki.new_key()
    cert = pki.self_signed("scep-server app credential", key)  # valid from an hour ago for 30 days
    (tmp_path / "app.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "app.key").write_bytes(pki.private_pem(key))
    with EmulatorServer(IntuneEmulator(), state_dir=tmp_path / "emulator") as emulator:
        client_id = "7d4c2a10-0000-4000-8000-000000000002"
        emulator.emulator.register_app(client_id, certificate=cert)
        settings = {**emulator.settings(), "client_id": client_id, "client_certificate": str(tmp_path / "app.pem"),
                    "client_key": str(tmp_path / "app.key"), "client_secret": {"env": "UNSET_SECRET_VARIABLE"}}
        config = intune_config(tmp_path, settings)
        init_ca(config.ca_dir, config.ca, None)
        runtime = build_runtime(config)
        try:
            server = ScepTestServer(runtime, create_app(config, runtime_override=runtime, start_background=False)
                                    .test_client(), tmp_path / "var")
            reply, _, _ = enroll(IntuneEnv(emulator, server, config, tmp_path))
            assert reply.status is PKIStatus.SUCCESS
        finally:
            runtime.close()


def test_success_notification_failure_withdraws_the_certificate(intune_env: IntuneEnv) -> None:
    intune_env.state.inject_fault("successNotification", status=500)
    reply, _, built = enroll(intune_env)
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST
    revoked = intune_env.server.runtime.store.list_certificates(status=CertStatus.REVOKED)
    assert len(revoked) == 1 and revoked[0].revocation_reason == 5  # cessationOfOperation
    assert intune_env.server.runtime.store.count_certificates(status=CertStatus.VALID) == 0


def test_pending_mode_survives_an_intune_outage(intune_env: IntuneEnv) -> None:
    """Emulator down for 20 s while a device enrolls → PENDING; CertPoll gets the certificate later."""
    spec = ChallengeSpec(subject="CN=pending-device")
    challenge = intune_env.state.mint_challenge(spec)
    device = Device(common_name="pending-signer")
    csr = csr_for(spec, device.key, challenge)
    intune_env.emulator.stop()
    started = time.monotonic()
    built = intune_env.server.pkcsreq(device, csr=csr)
    first = intune_env.server.send(built, device, profile="intune-pending")
    assert first.status is PKIStatus.PENDING
    worker = intune_env.server.runtime.background
    poll = client.build_cert_poll(
        intune_env.server.ca.ca_cert.subject, spec_subject(spec), transaction_id=built.transaction_id,
        signer_cert=device.signer, signer_key=device.key, recipient=intune_env.server.ca.ra_cert,
    )
    while time.monotonic() - started < 20:
        worker.run_once()  # Intune still down: the attempt is rescheduled
        assert intune_env.server.send(poll, device, profile="intune-pending").status is PKIStatus.PENDING
        time.sleep(2)
    intune_env.emulator.start()
    _run_until_due(intune_env)
    reply = intune_env.server.send(poll, device, profile="intune-pending")
    assert reply.status is PKIStatus.SUCCESS
    reply.certificate_for(device.key.public_key()).verify_directly_issued_by(intune_env.server.ca.ca_cert)
    assert len([n for n in intune_env.state.notifications if n["type"] == "success"]) == 1
    worker.run_once()
    assert len([n for n in intune_env.state.notifications if n["type"] == "success"]) == 1


def spec_subject(spec: ChallengeSpec) -> x509.Name:
    return x509.Name.from_rfc4514_string(spec.subject)


def _run_until_due(env: IntuneEnv) -> None:
    """Run the deferred validations as if the backoff had elapsed."""
    store = env.server.runtime.store
    deferred = env.server.runtime.service.issuance
    profiles = env.server.runtime.profiles
    from scep_server.jobs.tasks import DeferredValidations

    later = datetime.now(UTC) + timedelta(hours=1)
    assert DeferredValidations(store, deferred, profiles).run_once(now=later) >= 1


def test_failure_notifications_survive_an_outage_and_a_restart(intune_env: IntuneEnv) -> None:
    """A failure after a successful validation is reported through the durable outbox."""
    spec = ChallengeSpec(subject="CN=weak-key-device", key_size=1024)
    challenge = intune_env.state.mint_challenge(spec)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    device = Device(key=weak, common_name="weak-signer")  # a PKCSReq is signed with its CSR's key
    reply = intune_env.server.send(
        intune_env.server.pkcsreq(device, csr=csr_for(spec, weak, challenge)), device, profile="intune"
    )
    # Intune accepted the challenge; our policy (RSA >= 2048) refused: FAILURE, and Intune must hear of it.
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST
    intune_env.emulator.stop()
    outbox = intune_env.server.runtime.store
    assert outbox.outbox_counts()["pending"] == 1
    intune_env.server.runtime.background.run_once()  # Intune down: not delivered, retried later
    assert outbox.outbox_counts()["pending"] == 1
    intune_env.restart_server()
    intune_env.emulator.start()
    store = intune_env.server.runtime.store
    assert store.outbox_counts()["pending"] == 1
    _deliver_outbox_as_if_due(intune_env)
    assert store.outbox_counts() == {"pending": 0, "delivered": 1, "dead": 0}
    failures = [n for n in intune_env.state.notifications if n["type"] == "failure"]
    assert len(failures) == 1
    assert failures[0]["notification"]["hResult"] == 0x80070057


def _deliver_outbox_as_if_due(env: IntuneEnv) -> None:
    from scep_server.intune.client import IntuneClient
    from scep_server.service.intune_outbox import NotificationOutbox

    intune_client = IntuneClient(env.config.intune)
    try:
        later = datetime.now(UTC) + timedelta(hours=2)
        assert NotificationOutbox(env.server.runtime.store, intune_client).deliver_due(now=later) == 1
    finally:
        intune_client.close()


def test_intune_calls_are_counted_in_metrics(intune_env: IntuneEnv) -> None:
    assert enroll(intune_env, subject="CN=metered")[0].status is PKIStatus.SUCCESS
    text = intune_env.server.http.get("/metrics").get_data(as_text=True)
    assert 'scep_intune_calls_total{operation="validateRequest",status="200"}' in text
    assert 'scep_intune_call_seconds_count{operation="successNotification"}' in text


def test_nothing_is_handed_out_before_intune_acknowledges(intune_env: IntuneEnv) -> None:
    """While the success notification is under way, a retry of the transaction gets PENDING."""
    import threading

    spec = ChallengeSpec(subject="CN=slow-ack")
    device = Device(common_name="slow-ack-signer")
    csr = csr_for(spec, device.key, intune_env.state.mint_challenge(spec))
    first = intune_env.server.pkcsreq(device, csr=csr, transaction_id="SLOW-ACK-1")
    again = intune_env.server.pkcsreq(device, csr=csr, transaction_id="SLOW-ACK-1")
    intune_env.state.inject_fault("successNotification", latency=3, times=1)
    replies: list[object] = []
    worker = threading.Thread(target=lambda: replies.append(intune_env.server.send(first, device, profile="intune")))
    worker.start()
    time.sleep(1.5)
    assert intune_env.server.send(again, device, profile="intune").status is PKIStatus.PENDING
    worker.join(30)
    assert replies and replies[0].status is PKIStatus.SUCCESS  # type: ignore[attr-defined]
    assert intune_env.server.send(again, device, profile="intune").status is PKIStatus.SUCCESS
    assert intune_env.server.issued_count() == 1
