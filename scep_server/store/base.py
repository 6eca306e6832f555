"""What the store's repository classes share: their engines, error mapping and argument checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TypeVar

from alembic.util import CommandError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from scep_server.errors import StoreError, StoreUnavailable
from scep_server.store.writer import Writer

# How often an operation that lost a race to a concurrent writer looks again before giving up.
RACE_ATTEMPTS = 5

T = TypeVar("T")


class Repository:
    """Base of the store: a reading engine and a writing one over the same connection pool."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._writer = Writer(engine)


@contextmanager
def guard() -> Iterator[None]:
    """Turn SQLAlchemy and Alembic errors into the store's own."""
    try:
        yield
    except (OperationalError, PoolTimeout) as exc:
        raise StoreUnavailable(describe(exc)) from exc
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreUnavailable(describe(exc)) from exc
        raise StoreError(describe(exc)) from exc
    except (SQLAlchemyError, CommandError) as exc:
        raise StoreError(describe(exc)) from exc


def describe(exc: Exception) -> str:
    """The driver's message without the SQL statement and its parameters."""
    orig = getattr(exc, "orig", None)
    source = orig if isinstance(orig, BaseException) else exc
    text = str(source).strip().splitlines()
    return f"{type(source).__name__}: {text[0]}" if text else type(source).__name__


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime, name: str) -> datetime:
    if value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.astimezone(UTC)


def required(value: T | None) -> T:
    if value is None:
        raise StoreError("a required column is NULL")
    return value


def check_length(value: str | None, limit: int, name: str) -> None:
    if value is not None and len(value) > limit:
        raise ValueError(f"{name} is longer than {limit} characters")


MAX_PAGE = 1_000_000  # rows one query hands back at most (a report asks for one more than it shows)


def check_page(limit: int, offset: int = 0) -> None:
    if not 1 <= limit <= MAX_PAGE or not 0 <= offset <= 2**62:
        raise ValueError(f"limit must be from 1 to {MAX_PAGE} and offset from 0")
