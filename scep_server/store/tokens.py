"""Named API tokens: who may call the admin API, with which scopes, kept as hashes only.

The store never sees a token itself, only its SHA-256 (``token_hash``, looked up by its unique index)
and its first characters (``prefix``) to tell tokens apart in a listing. A revoked token keeps its row,
so a listing still shows when it was revoked and its name cannot be given to another token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Row, exists, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from scep_server.errors import Conflict, StoreError
from scep_server.store.audit_chain import Actor, AuditAction, AuditEntry, append
from scep_server.store.base import Repository, aware, check_length, guard, utcnow
from scep_server.store.tables import (
    DIGEST_LENGTH,
    LABEL_LENGTH,
    TOKEN_NAME_LENGTH,
    TOKEN_PREFIX_LENGTH,
    api_tokens,
)

_c = api_tokens.c


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    name: str
    scopes: tuple[str, ...]
    token_hash: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenRepository(Repository):
    """The API-token methods of ``Store``."""

    def add_token(
        self, *, name: str, scopes: Sequence[str], token_hash: str, prefix: str, actor: Actor
    ) -> TokenRecord:
        """Store a new token, audited as ``actor``'s in the same transaction; ``Conflict`` when a token
        (revoked or not) has that name already."""
        joined = ",".join(scopes)
        check_length(name, TOKEN_NAME_LENGTH, "name")
        check_length(joined, LABEL_LENGTH, "scopes")
        check_length(prefix, TOKEN_PREFIX_LENGTH, "prefix")
        if len(token_hash) != DIGEST_LENGTH:
            raise ValueError("token_hash must be a hex SHA-256")
        row = {"name": name, "scopes": joined, "token_hash": token_hash, "prefix": prefix, "created_at": utcnow()}
        try:
            with guard(), self._writer.begin() as conn:
                conn.execute(insert(api_tokens).values(**row))
                append(conn, _token_entry(actor, AuditAction.TOKEN_CREATE, name, scopes=joined, prefix=prefix))
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                raise Conflict(f"a token named {name!r} exists already") from exc
            raise
        found = self._one(_c.name == name)
        assert found is not None
        return found

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        return self._one(_c.token_hash == token_hash)

    def list_tokens(self) -> list[TokenRecord]:
        """Every token, revoked ones too, by name."""
        with guard(), self._engine.connect() as conn:
            rows = conn.execute(select(api_tokens).order_by(_c.name)).all()
        return [_record(row) for row in rows]

    def revoke_token(self, name: str, *, at: datetime, actor: Actor) -> TokenRecord | None:
        """Revoke the token named ``name`` (a revoked one keeps its first revocation time), audited as
        ``actor``'s in the same transaction when it changed anything; None if there is none."""
        statement = update(api_tokens).where(_c.name == name, _c.revoked_at.is_(None))
        with guard(), self._writer.begin() as conn:
            if conn.execute(statement.values(revoked_at=aware(at, "at"))).rowcount:
                append(conn, _token_entry(actor, AuditAction.TOKEN_REVOKE, name))
        return self._one(_c.name == name)

    def touch_token(self, token_id: int, *, at: datetime, unless_since: datetime) -> None:
        """Set the token's last use to ``at``, unless it was already used at or after ``unless_since``."""
        stale = or_(_c.last_used_at.is_(None), _c.last_used_at < aware(unless_since, "unless_since"))
        with guard(), self._writer.begin() as conn:
            conn.execute(update(api_tokens).where(_c.id == token_id, stale).values(last_used_at=aware(at, "at")))

    def has_active_tokens(self) -> bool:
        """Whether any token is not revoked."""
        with guard(), self._engine.connect() as conn:
            return bool(conn.execute(select(exists().where(_c.revoked_at.is_(None)))).scalar())

    def _one(self, condition: ColumnElement[bool]) -> TokenRecord | None:
        with guard(), self._engine.connect() as conn:
            row = conn.execute(select(api_tokens).where(condition)).one_or_none()
        return None if row is None else _record(row)


def _token_entry(actor: Actor, action: AuditAction, name: str, **detail: str) -> AuditEntry:
    return AuditEntry(actor, action.value, f"token={name}", detail)


def _record(row: Row[object]) -> TokenRecord:
    m = row._mapping
    return TokenRecord(
        id=int(m["id"]), name=m["name"], scopes=tuple(s for s in m["scopes"].split(",") if s),
        token_hash=m["token_hash"], prefix=m["prefix"], created_at=m["created_at"],
        last_used_at=m["last_used_at"], revoked_at=m["revoked_at"],
    )
