"""The report queries on SQLite and PostgreSQL: time ranges, subject substrings, states, order and outcomes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from scep_server.store import CertStatus, NewCertificate, Store, serial_hex
from scep_server.store.reports import CertificateFilter, CertificateOrder, EventFilter, like_pattern
from scep_server.store.tables import certificates, scep_events

Factory = Callable[..., NewCertificate]
ISSUER = "CN=Test CA,O=scep-server"
NOW = datetime.now(UTC).replace(microsecond=0)


def _issue(store: Store, make_certificate: Factory, serial: int, *, issued_ago: timedelta = timedelta(0),
           **overrides: object) -> None:
    store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(serial, **overrides))
    with store.engine.begin() as conn:
        conn.execute(
            update(certificates).where(certificates.c.serial_hex == serial_hex(serial))
            .values(issued_at=NOW - issued_ago)
        )


def _serials(store: Store, wanted: CertificateFilter) -> list[int]:
    return [record.serial for record in store.search_certificates(wanted)]


def test_issued_ranges_include_their_start_and_exclude_their_end(store: Store, make_certificate: Factory) -> None:
    for serial, days in ((1, 10), (2, 5), (3, 1)):
        _issue(store, make_certificate, serial, issued_ago=timedelta(days=days))
    five_days_ago = NOW - timedelta(days=5)
    assert _serials(store, CertificateFilter(issued_since=five_days_ago)) == [3, 2]
    assert _serials(store, CertificateFilter(issued_until=five_days_ago)) == [1]
    assert _serials(store, CertificateFilter(issued_since=NOW - timedelta(days=7), issued_until=NOW)) == [3, 2]


@pytest.mark.parametrize(
    ("search", "expected"),
    [
        ("laptop", [1, 3]),  # any case, newest first
        ("LAPTOP-0", [1]),
        ("100%", [2]),  # % is itself, not "anything"
        ("a_b", [4]),  # _ is itself, not "one character"
        ("back\\slash", [5]),
        ("%", [2]),
        ("Émile", [7]),  # beyond ASCII, the case as stored always matches
        ("nothing like it", []),
    ],
)
def test_subject_search_is_a_case_insensitive_literal_substring(
    store: Store, make_certificate: Factory, search: str, expected: list[int]
) -> None:
    subjects = {1: "CN=Laptop-01", 2: "CN=100% sure", 3: "CN=my laptop,O=Example", 4: "CN=a_b", 5: "CN=back\\slash"}
    subjects[6] = "CN=axb"  # what a_b would match as a LIKE pattern
    subjects[7] = "CN=Émile"
    for serial, subject in subjects.items():
        _issue(store, make_certificate, serial, subject=subject, issued_ago=timedelta(minutes=serial))
    assert _serials(store, CertificateFilter(subject_contains=search)) == expected


def test_states_and_expiry_bounds_combine(store: Store, make_certificate: Factory) -> None:
    _issue(store, make_certificate, 1, not_after=NOW + timedelta(days=10))
    _issue(store, make_certificate, 2, not_after=NOW + timedelta(days=40))
    _issue(store, make_certificate, 3, not_after=NOW - timedelta(days=1))  # expired
    _issue(store, make_certificate, 4, not_after=NOW + timedelta(days=5))
    _issue(store, make_certificate, 5, not_after=NOW + timedelta(days=20), profile="wifi")
    store.revoke(4, ISSUER, reason=1, revoked_at=NOW)
    expiring = CertificateFilter(
        status=CertStatus.VALID, expires_from=NOW, expires_before=NOW + timedelta(days=30),
        order=CertificateOrder.EXPIRING_FIRST,
    )
    assert _serials(store, expiring) == [1, 5]
    assert _serials(store, CertificateFilter(status=CertStatus.VALID, expires_from=NOW, profile="wifi")) == [5]
    assert _serials(store, CertificateFilter(expires_before=NOW)) == [3]
    assert _serials(store, CertificateFilter(status=CertStatus.REVOKED)) == [4]


def test_orders_break_ties_by_insertion_and_respect_the_limit(store: Store, make_certificate: Factory) -> None:
    for serial in (1, 2, 3):
        _issue(store, make_certificate, serial, not_after=NOW + timedelta(days=1))
    assert _serials(store, CertificateFilter(limit=2)) == [3, 2]
    assert _serials(store, CertificateFilter(order=CertificateOrder.EXPIRING_FIRST, limit=2)) == [1, 2]
    with pytest.raises(ValueError):
        store.search_certificates(CertificateFilter(limit=0))


def _record(store: Store, outcome: str, *, profile: str = "default", transaction_id: str | None = None,
            ago: timedelta = timedelta(0)) -> None:
    store.record_operation(
        profile=profile, operation="PKIOperation", message_type=19, transaction_id=transaction_id, outcome=outcome,
        detail=f"{outcome} detail", requester_ip="192.0.2.1",
    )
    with store.engine.begin() as conn:
        newest = conn.execute(scep_events.select().order_by(scep_events.c.id.desc()).limit(1)).one()
        conn.execute(update(scep_events).where(scep_events.c.id == newest.id).values(occurred_at=NOW - ago))


def test_events_filter_by_time_outcome_profile_and_transaction(store: Store) -> None:
    _record(store, "SUCCESS", transaction_id="tx-1", ago=timedelta(days=3))
    _record(store, "FAILURE:BAD_REQUEST", transaction_id="tx-2", ago=timedelta(days=2))
    _record(store, "PENDING", profile="wifi", transaction_id="tx-3", ago=timedelta(days=1))
    _record(store, "FAILURE:BAD_TIME", profile="wifi", transaction_id="tx-2")

    def outcomes(wanted: EventFilter) -> list[str]:
        return [event.outcome for event in store.search_events(wanted)]

    assert outcomes(EventFilter()) == ["FAILURE:BAD_TIME", "PENDING", "FAILURE:BAD_REQUEST", "SUCCESS"]
    assert outcomes(EventFilter(since=NOW - timedelta(days=2), until=NOW)) == ["PENDING", "FAILURE:BAD_REQUEST"]
    assert outcomes(EventFilter(outcomes=("FAILURE:BAD_REQUEST", "FAILURE:BAD_TIME"))) == [
        "FAILURE:BAD_TIME", "FAILURE:BAD_REQUEST",
    ]
    assert outcomes(EventFilter(profile="wifi")) == ["FAILURE:BAD_TIME", "PENDING"]
    assert outcomes(EventFilter(transaction_id="tx-2", profile="default")) == ["FAILURE:BAD_REQUEST"]
    assert outcomes(EventFilter(limit=1)) == ["FAILURE:BAD_TIME"]
    (event,) = store.search_events(EventFilter(transaction_id="tx-1"))
    assert (event.profile, event.message_type, event.detail, event.requester_ip) == (
        "default", 19, "SUCCESS detail", "192.0.2.1",
    )
    assert event.occurred_at == NOW - timedelta(days=3) and event.occurred_at.tzinfo is UTC


def test_like_pattern_escapes_the_wildcards_and_the_escape_character() -> None:
    assert like_pattern("a%b_c\\d") == "%a\\%b\\_c\\\\d%"
