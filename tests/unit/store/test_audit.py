"""The audit log of SCEP PKIOperation requests."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scep_server.store import Store


def test_record_operation_appends_to_the_audit_log(store: Store) -> None:
    before = datetime.now(UTC)
    store.record_operation(
        profile="default",
        operation="PKIOperation",
        message_type=None,
        transaction_id=None,
        outcome="bad_request",
        detail="undecodable CMS",
        requester_ip="198.51.100.7",
    )
    store.record_operation(
        profile="default",
        operation="PKIOperation",
        message_type=19,
        transaction_id="tx-1",
        outcome="issued",
        detail=None,
        requester_ip=None,
    )
    store.record_operation(
        profile="wifi",
        operation="PKIOperation",
        message_type=20,
        transaction_id="tx-1",
        outcome="pending",
        detail=None,
        requester_ip=None,
    )
    events = store.list_operations()
    assert [(e.profile, e.outcome) for e in events] == [
        ("wifi", "pending"),
        ("default", "issued"),
        ("default", "bad_request"),
    ]
    oldest = events[-1]
    assert (oldest.message_type, oldest.transaction_id, oldest.detail, oldest.requester_ip) == (
        None,
        None,
        "undecodable CMS",
        "198.51.100.7",
    )
    assert all(e.occurred_at.tzinfo is UTC and e.occurred_at >= before for e in events)
    assert [e.outcome for e in store.list_operations(profile="default", transaction_id="tx-1")] == ["issued"]
    assert [e.outcome for e in store.list_operations(limit=1, offset=1)] == ["issued"]


def test_record_operation_truncates_a_hostile_transaction_id(store: Store) -> None:
    store.record_operation(
        profile="default",
        operation="PKIOperation",
        message_type=19,
        transaction_id="x" * 1000,
        outcome="bad_request",
        detail=None,
        requester_ip=None,
    )
    (event,) = store.list_operations()
    assert event.transaction_id == "x" * 255


def test_record_operation_refuses_overlong_labels(store: Store) -> None:
    with pytest.raises(ValueError):
        store.record_operation(
            profile="default",
            operation="o" * 65,
            message_type=None,
            transaction_id=None,
            outcome="x",
            detail=None,
            requester_ip=None,
        )
    assert store.list_operations() == []
