from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scep_server.store import OutboxEntryNotPending, OutboxRecord, OutboxState, Store

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
PAYLOAD = {
    "transactionId": "tx-1",
    "certificateThumbprint": "AB" * 20,
    "serial": "0123abcd",
    "expires": "2031-01-01T00:00:00Z",
    "nested": {"b": [1, 2.5, None, True], "a": "ünïcode ✓"},
}


def _add(store: Store, kind: str = "success", at: datetime = T0, transaction_id: str | None = "tx-1") -> int:
    return store.outbox_add(kind=kind, transaction_id=transaction_id, payload=PAYLOAD, now=at)


def _entry(store: Store, outbox_id: int) -> OutboxRecord:
    (entry,) = [e for e in store.list_outbox(limit=1000, include_delivered=True) if e.id == outbox_id]
    return entry


def _ids(entries: list[OutboxRecord]) -> list[int]:
    return [entry.id for entry in entries]


def test_add_stores_a_due_entry_and_round_trips_the_payload(store: Store) -> None:
    outbox_id = _add(store)
    (entry,) = store.outbox_due(now=T0)
    assert entry.id == outbox_id
    assert (entry.kind, entry.transaction_id, entry.payload) == ("success", "tx-1", PAYLOAD)
    assert entry.created_at == entry.next_attempt_at == T0 and entry.created_at.tzinfo is UTC
    assert (entry.attempts, entry.delivered_at, entry.dead_at, entry.last_error) == (0, None, None, None)
    assert entry.state is OutboxState.PENDING
    assert store.outbox_due(now=T0 - MINUTE) == []


def test_add_defaults_to_now_and_accepts_no_transaction(store: Store) -> None:
    before = datetime.now(UTC)
    outbox_id = store.outbox_add(kind="failure", transaction_id=None, payload={})
    entry = _entry(store, outbox_id)
    assert before <= entry.created_at == entry.next_attempt_at <= datetime.now(UTC)
    assert entry.transaction_id is None and entry.payload == {}


def test_due_is_oldest_first_limited_and_only_pending(store: Store) -> None:
    later = _add(store, at=T0 + 2 * MINUTE)
    first = _add(store, at=T0)
    second = _add(store, at=T0 + MINUTE)
    delivered = _add(store, at=T0 - MINUTE)
    dead = _add(store, at=T0 - MINUTE)
    store.outbox_delivered(delivered, at=T0)
    store.outbox_dead(dead, at=T0, error="gone")
    assert _ids(store.outbox_due(now=T0 + 5 * MINUTE)) == [first, second, later]
    assert _ids(store.outbox_due(now=T0 + 5 * MINUTE, limit=2)) == [first, second]
    assert _ids(store.outbox_due(now=T0 + MINUTE)) == [first, second]


def test_lease_race_has_one_winner_and_the_lease_runs_out(store: Store) -> None:
    outbox_id = _add(store)
    (due,) = store.outbox_due(now=T0)
    lease_until = T0 + 5 * MINUTE
    workers = 8
    barrier = threading.Barrier(workers)

    def lease(_: int) -> bool:
        barrier.wait()
        return store.outbox_lease(outbox_id, expected_next_attempt_at=due.next_attempt_at, lease_until=lease_until)

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lease, range(workers)))
    assert results.count(True) == 1
    assert store.outbox_due(now=T0 + MINUTE) == []
    assert _ids(store.outbox_due(now=lease_until)) == [outbox_id]
    assert _entry(store, outbox_id).attempts == 0


def test_lease_needs_a_pending_entry_at_the_expected_time(store: Store) -> None:
    outbox_id = _add(store)
    assert not store.outbox_lease(outbox_id, expected_next_attempt_at=T0 - MINUTE, lease_until=T0 + MINUTE)
    assert not store.outbox_lease(outbox_id + 1000, expected_next_attempt_at=T0, lease_until=T0 + MINUTE)
    store.outbox_delivered(outbox_id, at=T0)
    assert not store.outbox_lease(outbox_id, expected_next_attempt_at=T0, lease_until=T0 + MINUTE)


def test_retry_counts_the_attempt_and_reschedules(store: Store) -> None:
    outbox_id = _add(store)
    assert store.outbox_lease(outbox_id, expected_next_attempt_at=T0, lease_until=T0 + MINUTE)
    store.outbox_retry(outbox_id, next_attempt_at=T0 + 10 * MINUTE, error="HTTP 503")
    store.outbox_retry(outbox_id, next_attempt_at=T0 + 20 * MINUTE, error="timeout")
    entry = _entry(store, outbox_id)
    assert (entry.attempts, entry.last_error, entry.next_attempt_at) == (2, "timeout", T0 + 20 * MINUTE)
    assert entry.state is OutboxState.PENDING
    assert store.outbox_due(now=T0 + 19 * MINUTE) == []
    assert _ids(store.outbox_due(now=T0 + 20 * MINUTE)) == [outbox_id]


def test_delivered_and_dead_finish_an_entry(store: Store) -> None:
    delivered = _add(store)
    dead = _add(store)
    store.outbox_delivered(delivered, at=T0 + MINUTE)
    store.outbox_dead(dead, at=T0 + 2 * MINUTE, error="HTTP 400")
    entry = _entry(store, delivered)
    assert (entry.state, entry.delivered_at, entry.dead_at, entry.attempts) == (
        OutboxState.DELIVERED,
        T0 + MINUTE,
        None,
        0,
    )
    entry = _entry(store, dead)
    assert (entry.state, entry.dead_at, entry.delivered_at) == (OutboxState.DEAD, T0 + 2 * MINUTE, None)
    assert (entry.attempts, entry.last_error) == (1, "HTTP 400")
    assert store.outbox_due(now=T0 + 10 * MINUTE) == []


@pytest.mark.parametrize("finish", ["delivered", "retry", "dead"])
def test_only_pending_entries_can_be_finished(store: Store, finish: str) -> None:
    delivered = _add(store)
    dead = _add(store)
    store.outbox_delivered(delivered, at=T0)
    store.outbox_dead(dead, at=T0, error="gone")

    def run(outbox_id: int) -> None:
        if finish == "delivered":
            store.outbox_delivered(outbox_id, at=T0 + MINUTE)
        elif finish == "retry":
            store.outbox_retry(outbox_id, next_attempt_at=T0 + MINUTE, error="x")
        else:
            store.outbox_dead(outbox_id, at=T0 + MINUTE, error="x")

    for outbox_id, state in ((delivered, OutboxState.DELIVERED), (dead, OutboxState.DEAD), (dead + 1000, None)):
        with pytest.raises(OutboxEntryNotPending) as info:
            run(outbox_id)
        assert (info.value.outbox_id, info.value.state) == (outbox_id, state)
    assert _entry(store, delivered).delivered_at == T0
    assert (_entry(store, dead).dead_at, _entry(store, dead).attempts) == (T0, 1)


def test_counts(store: Store) -> None:
    assert store.outbox_counts() == {"pending": 0, "delivered": 0, "dead": 0}
    ids = [_add(store) for _ in range(6)]
    store.outbox_delivered(ids[0], at=T0)
    store.outbox_delivered(ids[1], at=T0)
    store.outbox_dead(ids[2], at=T0, error="x")
    store.outbox_retry(ids[3], next_attempt_at=T0 + MINUTE, error="y")
    assert store.outbox_counts() == {"pending": 3, "delivered": 2, "dead": 1}


def test_list_is_newest_first_and_hides_delivered_unless_asked(store: Store) -> None:
    oldest = _add(store, at=T0)
    delivered = _add(store, at=T0 + MINUTE)
    dead = _add(store, at=T0 + 2 * MINUTE)
    newest = _add(store, at=T0 + 3 * MINUTE)
    store.outbox_delivered(delivered, at=T0 + 5 * MINUTE)
    store.outbox_dead(dead, at=T0 + 5 * MINUTE, error="x")
    assert _ids(store.list_outbox()) == [newest, dead, oldest]
    assert _ids(store.list_outbox(include_delivered=True)) == [newest, dead, delivered, oldest]
    assert _ids(store.list_outbox(limit=2, include_delivered=True)) == [newest, dead]


def test_entries_survive_closing_and_reopening_the_store(db_url: str) -> None:
    with Store.open(db_url) as store:
        store.migrate()
        outbox_id = _add(store)
        store.outbox_retry(outbox_id, next_attempt_at=T0 + MINUTE, error="HTTP 503")
    with Store.open(db_url) as reopened:
        (entry,) = reopened.outbox_due(now=T0 + MINUTE)
        assert (entry.id, entry.payload, entry.attempts, entry.last_error) == (outbox_id, PAYLOAD, 1, "HTTP 503")
        reopened.outbox_delivered(outbox_id, at=T0 + 2 * MINUTE)
        assert reopened.outbox_counts() == {"pending": 0, "delivered": 1, "dead": 0}


def test_payload_is_stored_as_sorted_json(store: Store) -> None:
    outbox_id = store.outbox_add(kind="k", transaction_id=None, payload={"b": 1, "a": {"d": 2, "c": 3}}, now=T0)
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql(f"SELECT payload FROM intune_outbox WHERE id = {outbox_id}").scalar_one()
    assert stored == '{"a":{"c":3,"d":2},"b":1}'


@pytest.mark.parametrize(
    "arguments",
    [
        {"kind": ""},
        {"kind": "k" * 65},
        {"transaction_id": ""},
        {"transaction_id": "t" * 256},
        {"now": datetime(2030, 1, 1)},
        {"payload": ["not", "a", "mapping"]},
        {"payload": {1: "non-string key"}},
        {"payload": {"x": object()}},
        {"payload": {"x": float("nan")}},
    ],
)
def test_add_rejects_misuse(store: Store, arguments: dict[str, Any]) -> None:
    values: dict[str, Any] = {"kind": "success", "transaction_id": "tx-1", "payload": {}, "now": T0}
    with pytest.raises(ValueError):
        store.outbox_add(**{**values, **arguments})
    assert store.outbox_counts()["pending"] == 0


def test_other_methods_reject_misuse(store: Store) -> None:
    outbox_id = _add(store)
    naive = datetime(2030, 1, 1)
    with pytest.raises(ValueError):
        store.outbox_due(now=naive)
    with pytest.raises(ValueError):
        store.outbox_due(now=T0, limit=0)
    with pytest.raises(ValueError):
        store.list_outbox(limit=0)
    with pytest.raises(ValueError):
        store.outbox_lease(outbox_id, expected_next_attempt_at=naive, lease_until=T0)
    with pytest.raises(ValueError):
        store.outbox_lease(outbox_id, expected_next_attempt_at=T0, lease_until=naive)
    with pytest.raises(ValueError):
        store.outbox_delivered(outbox_id, at=naive)
    with pytest.raises(ValueError):
        store.outbox_retry(outbox_id, next_attempt_at=naive, error="x")
    with pytest.raises(ValueError):
        store.outbox_dead(outbox_id, at=naive, error="x")
    assert _entry(store, outbox_id).state is OutboxState.PENDING
