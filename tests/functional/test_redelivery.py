"""Finding 5 in one process: a handler that dies after storing a certificate leaves no second one behind.

A handler's death is simulated by an exception no handler catches (``HandlerDied``) at the step named
in each test; the transaction is then left as a killed worker leaves it. The retry (same transactionID,
same CSR) after the stale-claim lease must deliver the stored certificate, acknowledged to Intune first
where Intune must acknowledge, and the transaction must end with exactly one valid certificate: the one
the device holds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from scep_server.challenge.intune import IntuneChallenge
from scep_server.challenge.static import StaticChallenge
from scep_server.errors import RetryLater
from scep_server.intune.contract import ChallengeSpec
from scep_server.jobs.tasks import DeferredValidations
from scep_server.scep import client
from scep_server.scep.types import PKIStatus
from scep_server.service.issuance import IssuanceService
from scep_server.store import CertStatus, TransactionState
from scep_server.store.tables import transactions

from .conftest import Device, ScepTestServer
from .intune_env import IntuneEnv, csr_for


class HandlerDied(BaseException):
    """The worker process was killed here."""


def _dies_once(monkeypatch: pytest.MonkeyPatch, owner: type, name: str, *, after: bool = False) -> list[int]:
    """Make ``owner.name`` kill its handler once (before the real call, or just after it); counts calls."""
    real: Callable[..., Any] = getattr(owner, name)
    calls: list[int] = []

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            if after:
                real(*args, **kwargs)
            raise HandlerDied(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, dying)
    return calls


def _claimed_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Have the static profile take the claimed path, Intune's: a new static transaction is otherwise
    issued in one database transaction (see ``issuance``), which leaves no store-then-complete window."""
    monkeypatch.setattr(StaticChallenge, "confirms_issuance", True)


def _lease_runs_out(server: ScepTestServer) -> None:
    with server.runtime.store.engine.begin() as conn:
        conn.execute(update(transactions).values(updated_at=datetime.now(UTC) - timedelta(minutes=10)))


def _die_in(server: ScepTestServer, built: client.BuiltRequest, profile: str = "default") -> None:
    with pytest.raises(HandlerDied):
        server.runtime.service.pki_operation(server.runtime.profiles[profile], built.der, "192.0.2.7")


def _valid_of(server: ScepTestServer, transaction_id: str) -> list[int]:
    store = server.runtime.store
    return [c.serial for c in store.list_certificates(limit=1000, status=CertStatus.VALID)
            if c.transaction_id == transaction_id]


def _successes(env: IntuneEnv, transaction_id: str) -> list[int]:
    return [int(n["notification"]["certificateSerialNumber"], 16) for n in env.state.notifications
            if n["type"] == "success" and n["transactionId"] == transaction_id]


def test_finding5_reclaimed_transaction_redelivers_the_stored_certificate(
    server: ScepTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _claimed_path(monkeypatch)
    _dies_once(monkeypatch, StaticChallenge, "notify_issued")
    device = Device(common_name="killed-mid-issuance")
    built = server.pkcsreq(device)
    _die_in(server, built)
    stored = server.runtime.store.get_transaction("default", built.transaction_id)
    assert stored is not None and stored.state is TransactionState.PENDING and stored.serial is not None
    again = server.pkcsreq(device, transaction_id=built.transaction_id)
    assert server.send(again, device).status is PKIStatus.PENDING  # within the lease: its handler may live
    _lease_runs_out(server)
    reply = server.send(server.pkcsreq(device, transaction_id=built.transaction_id), device)
    assert reply.status is PKIStatus.SUCCESS
    held = reply.certificate_for(device.key.public_key())
    assert held.serial_number == stored.serial
    assert server.runtime.store.list_operations(limit=1)[0].detail == f"re-delivered {held.serial_number:x}"
    assert _valid_of(server, built.transaction_id) == [held.serial_number]
    assert server.issued_count() == 1


def test_finding5_a_handler_dying_after_an_enrollment_stored_at_once_leaves_it_to_the_retry(
    server: ScepTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dies_once(monkeypatch, IssuanceService, "record_at_once", after=True)
    device = Device(common_name="killed-after-storing")
    built = server.pkcsreq(device)
    _die_in(server, built)
    stored = server.runtime.store.get_transaction("default", built.transaction_id)
    assert stored is not None and stored.state is TransactionState.ISSUED and stored.serial is not None
    reply = server.send(server.pkcsreq(device, transaction_id=built.transaction_id), device)
    held = reply.certificate_for(device.key.public_key())
    assert held.serial_number == stored.serial
    assert server.runtime.store.list_operations(limit=1)[0].detail == f"re-sent {held.serial_number:x}"
    assert _valid_of(server, built.transaction_id) == [held.serial_number] and server.issued_count() == 1


def test_finding5_redelivery_to_intune_is_acknowledged_again_first(
    intune_env: IntuneEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after Intune acknowledged but before the transaction was completed."""
    _dies_once(monkeypatch, IntuneChallenge, "notify_issued", after=True)
    server = intune_env.server
    spec = ChallengeSpec(subject="CN=killed-after-ack")
    device = Device(common_name="signer")
    built = server.pkcsreq(device, csr=csr_for(spec, device.key, intune_env.state.mint_challenge(spec)))
    _die_in(server, built, "intune")
    first = _successes(intune_env, built.transaction_id)
    assert len(first) == 1
    _lease_runs_out(server)
    reply = server.send(built, device, profile="intune")  # the very same message, resent
    assert reply.status is PKIStatus.SUCCESS
    held = reply.certificate_for(device.key.public_key())
    assert _successes(intune_env, built.transaction_id) == [held.serial_number, held.serial_number]
    assert _valid_of(server, built.transaction_id) == [held.serial_number] and server.issued_count() == 1
    assert [v["transactionId"] for v in intune_env.state.validations].count(built.transaction_id) == 1


def test_finding5_redelivery_refused_by_intune_withdraws_and_the_next_retry_starts_afresh(
    intune_env: IntuneEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    _dies_once(monkeypatch, IntuneChallenge, "notify_issued")
    server = intune_env.server
    spec = ChallengeSpec(subject="CN=killed-before-ack")
    device = Device(common_name="signer")
    built = server.pkcsreq(device, csr=csr_for(spec, device.key, intune_env.state.mint_challenge(spec)))
    _die_in(server, built, "intune")
    stored = server.runtime.store.get_transaction("intune", built.transaction_id)
    assert stored is not None and stored.serial is not None and _successes(intune_env, built.transaction_id) == []
    _lease_runs_out(server)
    intune_env.state.inject_fault("successNotification", status=500)
    refused = server.send(built, device, profile="intune")
    intune_env.state.clear_faults()
    assert refused.status is PKIStatus.FAILURE and refused.fail_info_text == RetryLater.public_text
    assert server.runtime.store.get_certificate(stored.serial, server.ca.issuer_name).status is CertStatus.REVOKED
    retried = server.send(built, device, profile="intune")
    assert retried.status is PKIStatus.SUCCESS
    held = retried.certificate_for(device.key.public_key())
    assert held.serial_number != stored.serial
    assert _valid_of(server, built.transaction_id) == [held.serial_number]


def test_finding5_background_retry_of_a_deferred_transaction_redelivers(
    intune_env: IntuneEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = intune_env.server
    spec = ChallengeSpec(subject="CN=deferred-and-killed")
    device = Device(common_name="signer")
    built = server.pkcsreq(device, csr=csr_for(spec, device.key, intune_env.state.mint_challenge(spec)))
    intune_env.emulator.stop()
    assert server.send(built, device, profile="intune-pending").status is PKIStatus.PENDING
    intune_env.emulator.start()
    _dies_once(monkeypatch, IntuneChallenge, "notify_issued")
    retries = DeferredValidations(server.runtime.store, server.runtime.service.issuance, server.runtime.profiles)
    with pytest.raises(HandlerDied):
        retries.run_once(now=datetime.now(UTC) + timedelta(hours=1))
    assert retries.run_once(now=datetime.now(UTC) + timedelta(hours=2)) == 1  # after the background lease
    reply = server.send(built, device, profile="intune-pending")
    assert reply.status is PKIStatus.SUCCESS
    held = reply.certificate_for(device.key.public_key())
    assert _valid_of(server, built.transaction_id) == [held.serial_number] and server.issued_count() == 1
    assert _successes(intune_env, built.transaction_id) == [held.serial_number]


def test_finding5_certificate_never_collected_is_revoked(
    server: ScepTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _claimed_path(monkeypatch)
    _dies_once(monkeypatch, StaticChallenge, "notify_issued")
    device = Device(common_name="never-came-back")
    built = server.pkcsreq(device)
    _die_in(server, built)
    issuance = server.runtime.service.issuance
    assert issuance.withdraw_abandoned(server.runtime.profiles) == 0  # its handler may still be at work
    assert issuance.withdraw_abandoned(server.runtime.profiles, now=datetime.now(UTC) + timedelta(days=2)) == 1
    assert _valid_of(server, built.transaction_id) == []
    failed = server.runtime.store.get_transaction("default", built.transaction_id)
    assert failed is not None and failed.state is TransactionState.FAILED
    late = server.send(server.pkcsreq(device, transaction_id=built.transaction_id), device)
    assert late.status is PKIStatus.SUCCESS  # a device that does come back starts afresh
    assert _valid_of(server, built.transaction_id) == [late.certificate_for(device.key.public_key()).serial_number]
