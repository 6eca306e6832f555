"""The steps of an enrollment in the store, the transaction search and its cursor pages, on SQLite and
PostgreSQL; and migration 0009, which adds them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, update

from scep_server.errors import FailInfo
from scep_server.service.enrollments import EnrollmentQueries, EnrollmentSearch
from scep_server.store import (
    AuditEvent,
    EnrollmentStep,
    NewCertificate,
    NewTransaction,
    Store,
    TransactionSearch,
    TransactionState,
)
from scep_server.store.engine import alembic_config
from scep_server.store.tables import metadata, transactions
from tests.support.servers import postgres_database, postgres_url  # noqa: F401 (fixtures)

ISSUER = "CN=Test CA,O=scep-server"
PKCS_REQ = 19
REPORT_INDEXES = {
    "certificates": "ix_certificates_status_not_after_id",
    "scep_events": "ix_scep_events_outcome_occurred_at_id",
    "scep_transactions": "ix_scep_transactions_created_at_id",
    "intune_outbox": "ix_intune_outbox_transaction_id",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A migrated store on a SQLite file, or in a schema of its own on PostgreSQL."""
    url = f"sqlite:///{tmp_path / 'scep-server.db'}" if request.param == "sqlite" else str(
        request.getfixturevalue("postgres_url")
    )
    with Store.open(url) as opened:
        opened.migrate()
        yield opened


def _claim(store: Store, transaction_id: str, *, profile: str = "intune", ip: str | None = "192.0.2.1") -> None:
    store.claim_transaction(
        profile=profile, transaction_id=transaction_id, message_type=PKCS_REQ,
        csr_der=b"csr-" + transaction_id.encode(), requester_ip=ip,
    )


def _issue(store: Store, transaction_id: str, serial: int, *, profile: str = "intune") -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    certificate = NewCertificate(
        serial=serial, issuer=ISSUER, subject=f"CN=device-{serial}", sans=(), not_before=now,
        not_after=now + timedelta(days=30), profile=profile, transaction_id=transaction_id, requester_ip=None,
        der=b"\x30\x82" + serial.to_bytes(8, "big"), sha1_thumbprint=f"{serial:040X}",
        sha256_thumbprint=f"{serial:064X}",
    )
    transaction = NewTransaction(profile, transaction_id, PKCS_REQ, b"csr", "192.0.2.9", None, None)
    event = AuditEvent(profile, "PKIOperation", PKCS_REQ, transaction_id, "SUCCESS", f"issued {serial:x}", None)
    store.record_enrollment(transaction, certificate, event)


def _validated(store: Store, transaction_id: str, code: str, *, profile: str = "intune") -> None:
    outcome = "accepted" if code == "Success" else "refused"
    store.record_step(profile=profile, transaction_id=transaction_id, step=EnrollmentStep.VALIDATED.value,
                      outcome=outcome, intune_code=code, activity_id=f"activity-{transaction_id}-{code}")


def _set_created(store: Store, transaction_id: str, moment: datetime) -> None:
    with store.engine.begin() as conn:
        conn.execute(update(transactions).where(transactions.c.transaction_id == transaction_id)
                     .values(created_at=moment))


def _found(store: Store, **conditions: Any) -> list[str]:
    return [found.transaction.transaction_id for found in store.search_transactions(TransactionSearch(**conditions))]


# -- steps ------------------------------------------------------------------------------------------------


def test_steps_are_listed_oldest_first_with_every_value(store: Store) -> None:
    start = datetime(2027, 1, 20, 9, 0, 0, 123456, tzinfo=UTC)
    store.record_step(profile="intune", transaction_id="T1", step="notified", outcome="acknowledged",
                      intune_code="Success", activity_id="act-2", detail="successNotification", at=start + timedelta(1))
    store.record_step(profile="intune", transaction_id="T1", step="validated", outcome="accepted",
                      intune_code="Success", activity_id="act-1", at=start)
    store.record_step(profile="other", transaction_id="T1", step="validated", outcome="refused",
                      intune_code="ChallengeExpired", at=start + timedelta(hours=1))
    store.record_step(profile="intune", transaction_id="T2", step="validated", outcome="accepted", at=start)

    steps = store.steps_of("T1", "intune")
    assert [(s.step, s.outcome, s.intune_code, s.activity_id, s.detail) for s in steps] == [
        ("validated", "accepted", "Success", "act-1", None),
        ("notified", "acknowledged", "Success", "act-2", "successNotification"),
    ]
    assert steps[0].occurred_at == start and steps[0].occurred_at.tzinfo == UTC
    assert [s.profile for s in store.steps_of("T1")] == ["intune", "other", "intune"]
    assert store.steps_of("T3") == []


def test_a_step_is_dated_now_unless_told(store: Store) -> None:
    before = datetime.now(UTC)
    store.record_step(profile="intune", transaction_id="T1", step="validated", outcome="accepted")
    (step,) = store.steps_of("T1")
    assert before <= step.occurred_at <= datetime.now(UTC)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("step", "", "step must not be empty"),
    ("outcome", "", "outcome must not be empty"),
    ("profile", "p" * 65, "profile is longer than 64"),
    ("intune_code", "C" * 65, "intune_code is longer than 64"),
    ("activity_id", "a" * 65, "activity_id is longer than 64"),
])
def test_an_invalid_step_is_refused(store: Store, field: str, value: str, message: str) -> None:
    values = {"profile": "intune", "transaction_id": "T1", "step": "validated", "outcome": "accepted", field: value}
    with pytest.raises(ValueError, match=message):
        store.record_step(**values)  # type: ignore[arg-type]
    assert store.steps_of("T1") == []


def test_a_naive_time_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.record_step(profile="intune", transaction_id="T1", step="validated", outcome="accepted",
                          at=datetime(2027, 1, 1))


# -- search -----------------------------------------------------------------------------------------------


def test_the_search_filters_on_every_condition(store: Store) -> None:
    _claim(store, "pending-1", ip="192.0.2.1")
    _claim(store, "failed-1", ip="192.0.2.2")
    store.record_failure(profile="intune", transaction_id="failed-1", fail_info=int(FailInfo.BAD_REQUEST),
                         reason="Intune refused the challenge: ChallengeExpired")
    _claim(store, "failed-2", profile="legacy")
    store.record_failure(profile="legacy", transaction_id="failed-2", fail_info=int(FailInfo.BAD_TIME), reason="late")
    _issue(store, "issued-1", 0x1F)

    assert _found(store) == ["issued-1", "failed-2", "failed-1", "pending-1"]
    assert _found(store, profile="legacy") == ["failed-2"]
    assert _found(store, state=TransactionState.FAILED) == ["failed-2", "failed-1"]
    assert _found(store, state=TransactionState.ISSUED) == ["issued-1"]
    assert _found(store, fail_info=int(FailInfo.BAD_REQUEST)) == ["failed-1"]
    assert _found(store, requester_ip="192.0.2.2") == ["failed-1"]
    assert _found(store, transaction_id="pending-1") == ["pending-1"]
    assert _found(store, profile="legacy", transaction_id="pending-1") == []
    (issued,) = store.search_transactions(TransactionSearch(state=TransactionState.ISSUED))
    assert issued.transaction.serial == 0x1F and issued.intune_code is None


def test_the_search_bounds_the_time_received(store: Store) -> None:
    day = datetime(2027, 1, 20, tzinfo=UTC)
    for index, name in enumerate(["day-0", "day-1", "day-2"]):
        _claim(store, name)
        _set_created(store, name, day + timedelta(days=index))
    assert _found(store, since=day + timedelta(days=1)) == ["day-2", "day-1"]
    assert _found(store, until=day + timedelta(days=1)) == ["day-0"]
    assert _found(store, since=day, until=day + timedelta(days=2)) == ["day-1", "day-0"]


def test_the_intune_code_is_searched_among_the_validations(store: Store) -> None:
    for name in ("expired", "accepted", "retried", "notified-only"):
        _claim(store, name)
    _validated(store, "expired", "ChallengeExpired")
    _validated(store, "accepted", "Success")
    _validated(store, "retried", "ChallengeExpired")
    store.record_step(profile="intune", transaction_id="retried", step="validated", outcome="unavailable")
    _validated(store, "retried", "Success")
    # A code a notification got is not what validateRequest answered: it does not count.
    store.record_step(profile="intune", transaction_id="notified-only", step="notified", outcome="acknowledged",
                      intune_code="ChallengeExpired")
    _validated(store, "expired", "ChallengeExpired", profile="elsewhere")  # another profile's transaction

    assert _found(store, intune_code="ChallengeExpired") == ["retried", "expired"]
    assert _found(store, intune_code="Success") == ["retried", "accepted"]
    codes = {found.transaction.transaction_id: found.intune_code
             for found in store.search_transactions(TransactionSearch())}
    # The latest answer of Intune: an attempt it did not answer leaves no code.
    assert codes == {"expired": "ChallengeExpired", "accepted": "Success", "retried": "Success",
                     "notified-only": None}


def test_cursor_pages_neither_skip_nor_repeat_a_transaction(store: Store) -> None:
    moment = datetime(2027, 1, 20, 12, 0, tzinfo=UTC)
    names = [f"tx-{index}" for index in range(7)]
    for index, name in enumerate(names):
        _claim(store, name)
        # Three rows at one moment: the row id orders them.
        _set_created(store, name, moment + timedelta(seconds=min(index, 3)))
    queries = EnrollmentQueries(store)
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = queries.search(EnrollmentSearch(limit=3, cursor=cursor))
        pages.append([item["transaction_id"] for item in page.items])
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == [["tx-6", "tx-5", "tx-4"], ["tx-3", "tx-2", "tx-1"], ["tx-0"]]
    first = queries.search(EnrollmentSearch(limit=3))
    _claim(store, "tx-late")  # received after the first page was read: the next page is the same
    _set_created(store, "tx-late", moment + timedelta(hours=1))
    second = queries.search(EnrollmentSearch(limit=3, cursor=first.next_cursor))
    assert [item["transaction_id"] for item in second.items] == ["tx-3", "tx-2", "tx-1"]


def test_a_page_that_ends_exactly_has_no_cursor(store: Store) -> None:
    for name in ("a", "b"):
        _claim(store, name)
    page = EnrollmentQueries(store).search(EnrollmentSearch(limit=2))
    assert len(page.items) == 2 and page.next_cursor is None


def test_a_search_item_is_json_ready(store: Store) -> None:
    _claim(store, "failed-1", ip="192.0.2.5")
    store.record_failure(profile="intune", transaction_id="failed-1", fail_info=int(FailInfo.BAD_REQUEST),
                         reason="Intune refused the challenge: ChallengeExpired")
    _validated(store, "failed-1", "ChallengeExpired")
    queries = EnrollmentQueries(store)
    (item,) = queries.search(EnrollmentSearch(fail_info="badRequest", intune_code="ChallengeExpired")).items
    created = datetime.fromisoformat(item.pop("created_at"))
    updated = datetime.fromisoformat(item.pop("updated_at"))
    assert created <= updated and created.tzinfo is not None
    assert item == {
        "profile": "intune", "transaction_id": "failed-1", "state": "failed", "message_type": "PKCS_REQ",
        "requester_ip": "192.0.2.5", "fail_info": "badRequest",
        "fail_reason": "Intune refused the challenge: ChallengeExpired", "intune_code": "ChallengeExpired",
        "serial": None, "deferred": False,
    }
    assert queries.search(EnrollmentSearch(fail_info="badTime")).items == []
    assert queries.search(EnrollmentSearch(outcome="pending")).items == []


@pytest.mark.parametrize(("search", "message"), [
    (EnrollmentSearch(fail_info="badSignature"), "fail_info must be one of badAlg, badMessageCheck"),
    (EnrollmentSearch(outcome="revoked"), "outcome must be one of issued, pending, failed"),
    (EnrollmentSearch(since=datetime(2027, 1, 1)), "since must be timezone-aware"),
    (EnrollmentSearch(until=datetime(2027, 1, 1)), "until must be timezone-aware"),
    (EnrollmentSearch(cursor="not a cursor"), "cursor is not valid"),
    (EnrollmentSearch(limit=0), "limit must be"),
    (EnrollmentSearch(limit=1001), "limit must be"),
    (EnrollmentSearch(intune_code="C" * 65), "intune_code is longer than 64"),
    (EnrollmentSearch(profile=""), "profile must be"),
])
def test_an_invalid_search_names_its_parameter(store: Store, search: EnrollmentSearch, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EnrollmentQueries(store).search(search)


# -- story ------------------------------------------------------------------------------------------------


def test_the_story_of_an_unknown_transaction_is_none(store: Store) -> None:
    store.record_step(profile="intune", transaction_id="T1", step="validated", outcome="accepted")
    assert EnrollmentQueries(store).story("T1") is None


def test_the_story_keeps_to_its_profile(store: Store) -> None:
    _claim(store, "shared", profile="intune")
    _claim(store, "shared", profile="other")
    _validated(store, "shared", "Success", profile="intune")
    _validated(store, "shared", "ChallengeExpired", profile="other")
    store.outbox_add(kind="failureNotification", transaction_id="shared",
                     payload={"transactionId": "shared", "hResult": 1, "errorDescription": "x", "profile": "other"})
    queries = EnrollmentQueries(store)
    story = queries.story("shared", "intune")
    assert story is not None
    assert [(s["step"], s["intune_code"]) for s in story["steps"]] == [("received", None), ("validated", "Success")]
    assert story["notifications"] == [] and story["certificate"] is None
    newest = queries.story("shared")
    assert newest is not None and newest["transaction"]["profile"] == "other"
    assert [n["description"] for n in newest["notifications"]] == ["x"]


# -- migration --------------------------------------------------------------------------------------------


def _alembic(store: Store, direction: str, revision: str) -> None:
    config = alembic_config()
    with store.engine.connect() as conn, conn.begin():
        config.attributes["connection"] = conn
        getattr(command, direction)(config, revision)


def _indexes(store: Store, table: str) -> set[str]:
    return {str(index["name"]) for index in inspect(store.engine).get_indexes(table)}


def test_0009_goes_down_to_0008_and_up_again(store: Store) -> None:
    _claim(store, "kept")
    _validated(store, "kept", "Success")
    _alembic(store, "downgrade", "0008")
    assert "enrollment_steps" not in inspect(store.engine).get_table_names()
    for table, index in REPORT_INDEXES.items():
        assert index not in _indexes(store, table)
    store.migrate()
    for table, index in REPORT_INDEXES.items():
        assert index in _indexes(store, table)
    assert _indexes(store, "enrollment_steps") >= {
        "ix_enrollment_steps_transaction_id_occurred_at_id", "ix_enrollment_steps_intune_code"
    }
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    assert _found(store) == ["kept"] and store.steps_of("kept") == []
