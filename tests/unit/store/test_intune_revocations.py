"""Intune revocation requests: recorded once per requestContext, results kept until acknowledged."""

from __future__ import annotations

from datetime import UTC, datetime

from scep_server.store import Store


def _record(store: Store, context: str = "ctx-1", serial: str = "0A1B") -> None:
    store.record_revocation_request(
        request_context=context, serial_number=serial, issuer_name="CN=CA", ca_configuration="host\\ca"
    )


def test_a_request_seen_twice_is_stored_once(store: Store) -> None:
    _record(store)
    store.set_revocation_result("ctx-1", code=0, message="revoked")
    _record(store)  # Intune sends it again until our result is acknowledged
    again = store.get_revocation_request("ctx-1")
    assert again is not None and again.result_code == 0 and not again.needs_processing


def test_results_are_uploaded_until_marked(store: Store) -> None:
    _record(store, "a")
    _record(store, "b")
    _record(store, "c")
    store.set_revocation_result("a", code=0, message="")
    store.set_revocation_result("b", code=4004, message="not found")
    assert [r.request_context for r in store.revocation_results_to_upload()] == ["a", "b"]
    store.mark_revocation_results_uploaded(["a"], at=datetime.now(UTC))
    assert [r.request_context for r in store.revocation_results_to_upload()] == ["b"]
    pending = store.get_revocation_request("c")
    assert pending is not None and pending.needs_processing and pending.result_code is None


def test_a_retryable_result_is_processed_again(store: Store) -> None:
    _record(store)
    store.set_revocation_result("ctx-1", code=4101, message="store unavailable")
    store.mark_revocation_results_uploaded(["ctx-1"], at=datetime.now(UTC))
    record = store.get_revocation_request("ctx-1")
    assert record is not None and record.needs_processing
    store.set_revocation_result("ctx-1", code=0, message="revoked")
    final = store.get_revocation_request("ctx-1")
    assert final is not None and final.uploaded_at is None and final.result_code == 0
