"""Every table as rows, read in one consistent snapshot, and loaded back into an empty database.

A dump reads the tables the database holds (not this version's schema: an older backup restores
too), in dependency order, inside one read transaction: a snapshot on SQLite's WAL, REPEATABLE READ on
PostgreSQL, so it can run while the server issues. Values are kept self-describing (bytes and
datetimes tagged) so that a dump from SQLite loads into PostgreSQL and back.

A load migrates the empty target to the dump's schema revision, inserts the rows with their ids, moves
PostgreSQL's id sequences past them, then migrates to the newest revision.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from alembic import command
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, MetaData, Table, func, insert, select, text

from scep_server.errors import StoreError
from scep_server.store.base import Repository, guard
from scep_server.store.engine import PG_MIGRATION_LOCK, alembic_config

ALEMBIC_TABLE = "alembic_version"
_INSERT_BATCH = 500
_READ_BATCH = 1000

Row = dict[str, Any]
RowSink = Callable[[str, Row], None]


@dataclass(frozen=True, slots=True)
class DumpSummary:
    """What a dump read: the schema revision, the dialect it came from, and the rows per table."""

    revision: str
    dialect: str
    rows: dict[str, int]


class BackupRepository(Repository):
    """Reading the whole database out, and into an empty one."""

    def dump(self, sink: RowSink) -> DumpSummary:
        """Hand every row of every table to ``sink`` (table name, row), tables in dependency order."""
        with guard(), self._engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SET TRANSACTION READ ONLY"))
                revision = _revision(conn)
                counts = {table.name: _dump_table(conn, table, sink) for table in _tables(conn)}
        return DumpSummary(revision=revision, dialect=self._engine.dialect.name, rows=counts)

    def is_empty(self) -> bool:
        """True when the database has no schema yet, or its tables hold no rows."""
        with guard(), self._engine.connect() as conn:
            return all(conn.execute(select(func.count()).select_from(t)).scalar_one() == 0 for t in _tables(conn))

    def load(
        self, revision: str, rows: Callable[[str], Iterable[Row]], *, before_commit: Callable[[], None] | None = None
    ) -> dict[str, int]:
        """Fill the empty database from a dump at ``revision``: ``rows(table)`` yields that table's rows.

        All in one transaction: a load that fails, or whose ``before_commit`` raises, leaves the database
        as it was. ``StoreError`` when the database is not empty or the revision is unknown here.
        """
        config = alembic_config()
        with guard(), self._writer.connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(PG_MIGRATION_LOCK)))
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            tables = _tables(conn)
            if any(conn.execute(select(func.count()).select_from(t)).scalar_one() for t in tables):
                raise StoreError("the database already holds data: restore needs an empty one")
            counts = {table.name: _load_table(conn, table, rows(table.name)) for table in tables}
            if conn.dialect.name == "postgresql":
                for table in tables:
                    _advance_id_sequence(conn, table)
            command.upgrade(config, "head")
            if before_commit is not None:
                before_commit()
        return counts


def _revision(conn: Connection) -> str:
    heads = MigrationContext.configure(conn).get_current_heads()
    if len(heads) != 1:
        raise StoreError("the database has no current schema revision to back up")
    return str(heads[0])


def _tables(conn: Connection) -> list[Table]:
    """The database's own tables (as they are now, whatever the revision), parents before children."""
    reflected = MetaData()
    reflected.reflect(bind=conn)
    return [table for table in reflected.sorted_tables if table.name != ALEMBIC_TABLE]


def _dump_table(conn: Connection, table: Table, sink: RowSink) -> int:
    order = list(table.primary_key.columns) or list(table.columns)
    count = 0
    result = conn.execution_options(yield_per=_READ_BATCH).execute(select(table).order_by(*order))
    for row in result.mappings():
        sink(table.name, {key: encode_value(value) for key, value in row.items()})
        count += 1
    return count


def _load_table(conn: Connection, table: Table, rows: Iterable[Row]) -> int:
    known = set(table.columns.keys())
    count = 0
    for batch in _batches(rows, _INSERT_BATCH):
        decoded = [_decoded_row(table.name, row, known) for row in batch]
        conn.execute(insert(table), decoded)
        count += len(decoded)
    return count


def _decoded_row(table: str, row: Row, known: set[str]) -> Row:
    unknown = set(row) - known
    if unknown:
        raise StoreError(f"the backup's {table} rows have columns this schema lacks: {', '.join(sorted(unknown))}")
    return {key: decode_value(value) for key, value in row.items()}


def _advance_id_sequence(conn: Connection, table: Table) -> None:
    if "id" not in table.columns:
        return
    # The table name comes from the database's own catalogue, not from the backup.
    statement = (
        "SELECT setval(pg_get_serial_sequence(:table, 'id'), COALESCE(MAX(id), 1), MAX(id) IS NOT NULL)"
        f' FROM "{table.name}"'
    )
    conn.execute(text(statement), {"table": table.name})


def _batches(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_value(value: Any) -> Any:
    """A column value as JSON: bytes and datetimes tagged, a naive datetime taken as UTC (the store
    writes only UTC; SQLite returns it without a zone)."""
    if isinstance(value, bytes | memoryview):
        return {"bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime):
        aware = value if value.utcoffset() is not None else value.replace(tzinfo=UTC)
        return {"datetime": aware.astimezone(UTC).isoformat()}
    return value


def decode_value(value: Any) -> Any:
    """The inverse of ``encode_value``; ``StoreError`` for a tagged value it cannot read."""
    if not isinstance(value, dict):
        return value
    try:
        if set(value) == {"bytes"}:
            return base64.b64decode(value["bytes"], validate=True)
        if set(value) == {"datetime"}:
            parsed = datetime.fromisoformat(value["datetime"])
            if parsed.utcoffset() is None:
                raise ValueError("no time zone")
            return parsed.astimezone(UTC)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"an unreadable value in the backup: {exc}") from None
    raise StoreError(f"an unknown value in the backup: {sorted(value)}")
