"""Every certificate listing and lookup is read through an index that serves its filter and its order.

The query the store really sends is captured and handed to the planner: SQLite's EXPLAIN QUERY PLAN must
search an index on the filtered columns and never sort in a temp B-tree; PostgreSQL's EXPLAIN must do an
index scan with the filter in its index condition and, for a page, no Sort node. On tables this small
PostgreSQL would rather read every row, so sequential and bitmap scans (and for a page sorts) are priced
out: what is asserted is that a fitting index exists and the planner can use it, which is what keeps a
page cheap on a million rows. A lookup of a key may sort its few rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event, inspect, text

from scep_server.store import CertStatus, NewCertificate, Store
from scep_server.store.engine import alembic_config
from scep_server.store.tables import metadata

Factory = Callable[..., NewCertificate]
ISSUER = "CN=Test CA,O=scep-server"
StoreCall = Callable[[Store], object]
Statement = tuple[str, Any]
POSTGRES_PRICED_OUT = ("enable_seqscan", "enable_bitmapscan")

# Pages, newest first: the index must give the rows in order, or every match is read and sorted.
PAGES: dict[str, tuple[StoreCall, tuple[str, ...]]] = {
    "newest first": (lambda s: s.list_certificates(limit=100), ()),
    "a later page": (lambda s: s.list_certificates(limit=100, offset=300), ()),
    "revoked": (lambda s: s.list_certificates(limit=100, status=CertStatus.REVOKED), ("status",)),
    "valid": (lambda s: s.list_certificates(limit=100, status=CertStatus.VALID), ("status",)),
    "one profile": (lambda s: s.list_certificates(limit=100, profile="default"), ("profile",)),
    "revoked of one profile": (
        lambda s: s.list_certificates(limit=100, status=CertStatus.REVOKED, profile="default"),
        ("profile", "status"),
    ),
    "revoked serials": (lambda s: list(s.iter_revoked(ISSUER, batch_size=2)), ("issuer", "status")),
}
# Lookups of a key: the index must find the few matching rows; ordering those few may be a sort.
LOOKUPS: dict[str, tuple[StoreCall, tuple[str, ...]]] = {
    "one certificate": (lambda s: s.get_certificate(5, ISSUER), ("serial_hex",)),
    "any issuer's": (lambda s: s.get_certificate(5), ("serial_hex",)),
    "revoked count": (lambda s: s.count_certificates(status=CertStatus.REVOKED), ("status",)),
}

KEPT_INDEXES = {"ix_certificates_profile_transaction_id", "ix_certificates_subject"}
INDEXES_0005 = KEPT_INDEXES | {"ix_certificates_status", "ix_certificates_issued_at"}
INDEXES_0006 = KEPT_INDEXES | {
    "ix_certificates_issued_at_id",
    "ix_certificates_status_issued_at_id",
    "ix_certificates_profile_issued_at_id",
    "ix_certificates_profile_status_issued_at_id",
    "ix_certificates_issuer_status_serial_hex",
    "ix_certificates_serial_hex",
}


@pytest.fixture
def filled(store: Store, make_certificate: Factory) -> Store:
    for serial in range(1, 8):
        store.record_issued(profile="default", transaction_id=None, certificate=make_certificate(serial))
    for serial in (2, 4, 6):
        store.revoke(serial, ISSUER, reason=1, revoked_at=datetime.now(UTC))
    return store


@pytest.mark.parametrize("name", PAGES)
def test_each_page_is_read_in_index_order(filled: Store, name: str) -> None:
    call, filtered = PAGES[name]
    for sql, parameters in _statements(filled, call):
        plan = _plan(filled, sql, parameters, may_sort=False)
        assert _searches_index(filled, plan, filtered) and not _sorts(plan), f"{name}: {sql}\n" + "\n".join(plan)


@pytest.mark.parametrize("name", LOOKUPS)
def test_each_lookup_searches_an_index_on_its_key(filled: Store, name: str) -> None:
    call, filtered = LOOKUPS[name]
    for sql, parameters in _statements(filled, call):
        plan = _plan(filled, sql, parameters, may_sort=True)
        assert _searches_index(filled, plan, filtered), f"{name}: {sql}\n" + "\n".join(plan)


def test_a_sorting_plan_is_told_apart(filled: Store) -> None:
    """Ordering by columns no index holds must fail the check, or the page test could never fail."""
    sql = "SELECT id FROM certificates WHERE status = 'revoked' ORDER BY subject DESC, not_after"
    plan = _plan(filled, sql, _no_parameters(filled), may_sort=False)
    assert _sorts(plan)


def test_a_scan_without_an_index_is_told_apart(filled: Store) -> None:
    sql = "SELECT id FROM certificates WHERE requester_ip = '192.0.2.10'"
    plan = _plan(filled, sql, _no_parameters(filled), may_sort=True)
    assert not _searches_index(filled, plan, ("requester_ip",))


def test_0006_goes_down_to_the_0005_indexes_and_up_again(filled: Store) -> None:
    _alembic(filled, "downgrade", "0005")
    assert _certificate_indexes(filled) == INDEXES_0005
    # Read with SQL of that schema: today's queries name columns later migrations add.
    with filled.engine.connect() as conn:
        revoked = conn.execute(text("SELECT serial_hex FROM certificates WHERE status = 'revoked'")).scalars()
        assert sorted(revoked) == ["2", "4", "6"]
    _alembic(filled, "upgrade", "0006")
    assert _certificate_indexes(filled) == INDEXES_0006
    filled.migrate()
    with filled.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def _alembic(store: Store, direction: str, revision: str) -> None:
    config = alembic_config()
    with store.engine.connect() as conn, conn.begin():
        config.attributes["connection"] = conn
        getattr(command, direction)(config, revision)


def _certificate_indexes(store: Store) -> set[str]:
    """The named indexes; the unique constraint's own index (PostgreSQL lists it too) is left out."""
    names = {str(index["name"]) for index in inspect(store.engine).get_indexes("certificates")}
    return {name for name in names if name.startswith("ix_")}


def _statements(store: Store, call: StoreCall) -> list[Statement]:
    with _captured(store) as statements:
        call(store)
    assert statements, "the call sent no SELECT on certificates"
    return statements


def _searches_index(store: Store, plan: Sequence[str], filtered: tuple[str, ...]) -> bool:
    """Whether the plan reads certificates through an index, searching it on every filtered column."""
    text = "\n".join(plan)
    if _postgres(store):
        conditions = " ".join(re.findall(r"Index Cond: (.*)", text))
        return bool(re.search(r"Index (Only )?Scan", text)) and all(column in conditions for column in filtered)
    searches = " ".join(re.findall(r"USING (?:COVERING )?INDEX \S+ \((.*)\)", text))
    reads_index = bool(re.search(r"(SEARCH|SCAN) certificates USING (COVERING )?INDEX", text))
    return reads_index and all(re.search(rf"\b{column}[=>]", searches) for column in filtered)


def _sorts(plan: Sequence[str]) -> bool:
    return any("TEMP B-TREE" in line or "Sort" in line for line in plan)


@contextmanager
def _captured(store: Store) -> Iterator[list[Statement]]:
    statements: list[Statement] = []

    def keep(conn: Connection, cursor: object, sql: str, parameters: Any, context: object, many: bool) -> None:
        if sql.lstrip().upper().startswith("SELECT") and "certificates" in sql:
            statements.append((sql, parameters))

    event.listen(store.engine, "before_cursor_execute", keep)
    try:
        yield statements
    finally:
        event.remove(store.engine, "before_cursor_execute", keep)


def _plan(store: Store, sql: str, parameters: Any, *, may_sort: bool) -> list[str]:
    """The query plan, one line a step; on PostgreSQL, unless ``may_sort``, sorting is priced out too."""
    with store.engine.connect() as conn:
        if not _postgres(store):
            return [str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", parameters)]
        for setting in POSTGRES_PRICED_OUT if may_sort else (*POSTGRES_PRICED_OUT, "enable_sort"):
            conn.exec_driver_sql(f"SET LOCAL {setting} = off")
        return [str(row[0]) for row in conn.exec_driver_sql(f"EXPLAIN {sql}", parameters)]


def _no_parameters(store: Store) -> Any:
    return {} if _postgres(store) else ()


def _postgres(store: Store) -> bool:
    return store.engine.dialect.name == "postgresql"
