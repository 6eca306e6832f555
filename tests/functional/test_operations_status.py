"""The operators' status and repairs on a real server: the outbox, deferred transactions, the Intune
revocation sync and credential expiry, retrying a dead notification, and revocations listed with who
revoked them and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scep_server.service.certificates import Revoked
from scep_server.service.reports import AuditQuery, RevocationQuery

from .conftest import Device, ScepTestServer


def _dead_entry(server: ScepTestServer, transaction_id: str = "tx-dead") -> int:
    store = server.runtime.store
    outbox_id = store.outbox_add(kind="issued", transaction_id=transaction_id, payload={"serial": "01"})
    store.outbox_dead(outbox_id, at=datetime.now(UTC), error="Intune answered 500")
    return outbox_id


def test_a_quiet_server_reports_nothing_waiting_and_its_credentials(server: ScepTestServer) -> None:
    status = server.runtime.operations.status()
    assert status["outbox"] == {"pending": 0, "delivered": 0, "dead": 0, "entries": []}
    assert status["deferred"] == {"count": 0, "entries": []}
    assert status["revocation_sync"] == {
        "last_received_at": None, "last_processed_at": None, "last_uploaded_at": None, "awaiting_upload": 0,
        "results": {},
    }
    expiry = {entry["credential"]: entry for entry in status["expiry"]}
    assert set(expiry) == {"ca", "ra", "ocsp"}  # no Entra app configured: nothing asked of Graph
    ca = expiry["ca"]
    assert ca["not_after"] == server.ca.ca_cert.not_valid_after_utc.isoformat()
    assert ca["days_left"] > 300 and ca["expired"] is False
    assert datetime.fromisoformat(status["taken_at"]).tzinfo is not None


def test_a_dead_notification_retried_is_due_again_and_audited(server: ScepTestServer) -> None:
    store, operations = server.runtime.store, server.runtime.operations
    outbox_id = _dead_entry(server)
    (listed,) = operations.status()["outbox"]["entries"]
    assert (listed["id"], listed["state"], listed["attempts"], listed["last_error"]) == (
        outbox_id, "dead", 1, "Intune answered 500",
    )
    assert listed["dead_at"] is not None
    assert store.outbox_due(now=datetime.now(UTC)) == []

    assert operations.retry_outbox(outbox_id, actor="token:ops", source="api") is True

    (due,) = store.outbox_due(now=datetime.now(UTC))
    assert (due.id, due.attempts, due.dead_at, due.state.value) == (outbox_id, 1, None, "pending")
    assert {k: v for k, v in operations.status()["outbox"].items() if k != "entries"} == {
        "pending": 1, "delivered": 0, "dead": 0,
    }
    (audited,) = server.runtime.reports.audit(AuditQuery(action="outbox.retry")).items
    assert (audited["actor"], audited["source"], audited["subject"]) == ("token:ops", "api", f"outbox={outbox_id}")
    assert audited["detail"] == {"kind": "issued", "transaction_id": "tx-dead", "state": "dead", "attempts": 1}
    assert store.verify_audit().intact


def test_only_an_undelivered_entry_can_be_retried(server: ScepTestServer) -> None:
    store, operations = server.runtime.store, server.runtime.operations
    delivered = store.outbox_add(kind="issued", transaction_id="tx-done", payload={})
    store.outbox_delivered(delivered, at=datetime.now(UTC))
    assert operations.retry_outbox(delivered, actor="token:ops", source="api") is False
    assert operations.retry_outbox(delivered + 1000, actor="token:ops", source="api") is False
    assert server.runtime.reports.audit(AuditQuery(action="outbox.retry")).items == []
    with pytest.raises(ValueError, match="outbox_id"):
        operations.retry_outbox(0, actor="token:ops", source="api")


def test_deferred_transactions_are_listed_soonest_due_first(server: ScepTestServer) -> None:
    store = server.runtime.store
    later = datetime.now(UTC) + timedelta(minutes=10)
    for transaction_id, due in (("tx-late", later), ("tx-soon", later - timedelta(minutes=5))):
        store.claim_transaction(profile="default", transaction_id=transaction_id, message_type=19, csr_der=b"\x30",
                                requester_ip="192.0.2.7")
        store.defer_transaction(profile="default", transaction_id=transaction_id, next_attempt_at=due,
                                error="Intune unreachable")
    deferred = server.runtime.operations.status()["deferred"]
    assert deferred["count"] == 2
    assert [entry["transaction_id"] for entry in deferred["entries"]] == ["tx-soon", "tx-late"]
    assert deferred["entries"][1] == {"profile": "default", "transaction_id": "tx-late", "attempts": 1,
                                      "next_attempt_at": later.isoformat(), "last_error": "Intune unreachable"}


def test_the_revocation_sync_shows_what_is_owed_to_intune(server: ScepTestServer) -> None:
    store = server.runtime.store
    for context, code in (("ctx-1", 0), ("ctx-2", 4004), ("ctx-3", 0)):
        store.record_revocation_request(request_context=context, serial_number="0a", issuer_name=None,
                                        ca_configuration=None)
        store.set_revocation_result(context, code=code, message="done")
    store.record_revocation_request(request_context="ctx-4", serial_number="0b", issuer_name=None,
                                    ca_configuration=None)  # downloaded, not processed yet
    store.mark_revocation_results_uploaded(["ctx-1"], at=datetime.now(UTC))
    sync = server.runtime.operations.status()["revocation_sync"]
    assert sync["awaiting_upload"] == 2
    assert sync["results"] == {"0": 2, "4004": 1}
    received = store.get_revocation_request("ctx-4")
    uploaded = store.get_revocation_request("ctx-1")
    assert received is not None and uploaded is not None and uploaded.uploaded_at is not None
    assert sync["last_received_at"] == received.received_at.isoformat()
    assert sync["last_uploaded_at"] == uploaded.uploaded_at.isoformat()
    assert sync["last_processed_at"] is not None


def test_revocations_list_who_revoked_why_and_the_comment(server: ScepTestServer) -> None:
    runtime = server.runtime
    first = server.enroll(Device(common_name="stolen-laptop"))
    second = server.enroll(Device(common_name="retired-phone"))
    answer = runtime.certificates.revoke(first.serial_number, reason="keyCompromise", actor="token:ops",
                                         source="api", comment="stolen from a car, ticket INC-42")
    assert isinstance(answer, Revoked)
    runtime.certificates.revoke(second.serial_number, reason="cessationOfOperation", actor="cli:root", source="cli")

    newest, oldest = runtime.reports.revocations(RevocationQuery()).items
    assert newest["serial"] == f"{second.serial_number:x}" and newest["comment"] is None
    assert (newest["actor"], newest["source"], newest["reason"]) == ("cli:root", "cli", "cessationOfOperation")
    assert oldest == {
        "serial": f"{first.serial_number:x}", "issuer": server.ca.issuer_name, "reason": "keyCompromise",
        "actor": "token:ops", "source": "api", "action": "certificate.revoke",
        "revoked_at": oldest["revoked_at"], "comment": "stolen from a car, ticket INC-42",
        "audit_id": oldest["audit_id"],
    }
    assert [item["serial"] for item in runtime.reports.revocations(RevocationQuery(actor="token:ops")).items] == [
        f"{first.serial_number:x}"
    ]
    assert runtime.reports.revocations(RevocationQuery(source="intune-sync")).items == []

    page = runtime.reports.revocations(RevocationQuery(limit=1))
    assert [item["serial"] for item in page.items] == [f"{second.serial_number:x}"] and page.next_cursor
    rest = runtime.reports.revocations(RevocationQuery(limit=1, cursor=page.next_cursor))
    assert [item["serial"] for item in rest.items] == [f"{first.serial_number:x}"] and rest.next_cursor is None
    assert runtime.store.verify_audit().intact


@pytest.mark.parametrize(("comment", "problem"), [("x" * 501, "longer than 500"), ("line\nbreak", "control")])
def test_a_comment_that_cannot_be_recorded_revokes_nothing(server: ScepTestServer, comment: str, problem: str) -> None:
    certificate = server.enroll(Device(common_name="kept"))
    with pytest.raises(ValueError, match=f"comment.*{problem}"):
        server.runtime.certificates.revoke(certificate.serial_number, reason="keyCompromise", comment=comment)
    record = server.runtime.store.get_certificate(certificate.serial_number)
    assert record is not None and record.status.value == "valid"
    assert server.runtime.reports.revocations(RevocationQuery()).items == []


def test_the_audit_listing_filters_and_pages(server: ScepTestServer) -> None:
    runtime = server.runtime
    certificates = [server.enroll(Device(common_name=f"device-{n}")) for n in range(3)]
    runtime.certificates.revoke(certificates[0].serial_number, reason="superseded", actor="token:ops", source="api")
    issued = runtime.reports.audit(AuditQuery(action="certificate.issue", limit=2))
    assert [item["action"] for item in issued.items] == ["certificate.issue"] * 2
    assert issued.items[0]["id"] > issued.items[1]["id"] and issued.next_cursor is not None
    rest = runtime.reports.audit(AuditQuery(action="certificate.issue", limit=2, cursor=issued.next_cursor))
    assert len(rest.items) == 1 and rest.next_cursor is None
    assert {item["detail"]["profile"] for item in issued.items + rest.items} == {"default"}
    (by_ops,) = runtime.reports.audit(AuditQuery(actor="token:ops")).items
    assert by_ops["detail"] == {"reason": "superseded"}
    later = datetime.now(UTC) + timedelta(hours=1)
    assert runtime.reports.audit(AuditQuery(since=later)).items == []
    with pytest.raises(ValueError, match="cursor"):
        runtime.reports.audit(AuditQuery(cursor="nope"))
    with pytest.raises(ValueError, match="since"):
        runtime.reports.audit(AuditQuery(since=later, until=later))
