"""Lock fixtures: a SQLite store in a temporary directory, and a PostgreSQL database of its own.

PostgreSQL (:mod:`tests.support.servers`): a throwaway database for the session. An unreachable server skips
the PostgreSQL cases locally and fails them when ``CI`` is set.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import URL, Engine

from tests.support.servers import autocommit_engine, postgres_database, postgres_url  # noqa: F401 (fixtures)


@pytest.fixture
def admin(postgres_database: URL) -> Iterator[Engine]:  # noqa: F811 (the imported fixture)
    """An autocommit engine on the session's database, to look at pg_locks and end sessions."""
    engine = autocommit_engine(postgres_database)
    yield engine
    engine.dispose()
