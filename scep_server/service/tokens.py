"""Named API tokens with scopes: created, listed and revoked by the CLI, checked by the admin APIs and the
console (which keeps only a token's SHA-256 in its session: :meth:`TokenService.authenticate_digest`).

A token is ``scep_`` and 32 random bytes in base64url, shown once when it is created; the store keeps
only its SHA-256 and its first ``PREFIX_LENGTH`` characters. Scopes: ``read`` (GET), ``revoke``
(revoking a certificate) and ``admin`` (everything, read and revoke included). The configured
``admin_token`` counts as a token with the ``admin`` scope (:data:`ADMIN_TOKEN_GRANT`).

Revocations made with a named token are audited as ``token:<name>``, with ``admin_token`` as
``admin-token``. A token's last use is written at most once per ``TOUCH_INTERVAL``, so reads stay reads.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from scep_server.errors import InvalidInput, NotFound
from scep_server.store import Actor, Store
from scep_server.store.tokens import TokenRecord

__all__ = [
    "ADMIN_TOKEN_GRANT",
    "Scope",
    "TokenGrant",
    "TokenService",
    "parse_scopes",
    "token_hash",
]

SECRET_PREFIX = "scep_"
SECRET_BYTES = 32
PREFIX_LENGTH = 8
TOUCH_INTERVAL = timedelta(minutes=1)
ACTIVE_CACHE_SECONDS = 5.0  # how long "is any named token active?" is remembered (see TokenService.any_active)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
HEX_DIGEST = re.compile(r"[0-9a-f]{64}")


class Scope(StrEnum):
    READ = "read"
    REVOKE = "revoke"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """What a presented token may do, and who the audit log names for what it does."""

    actor: str
    scopes: frozenset[Scope]

    def allows(self, needed: Scope) -> bool:
        return Scope.ADMIN in self.scopes or needed in self.scopes


ADMIN_TOKEN_GRANT = TokenGrant("admin-token", frozenset({Scope.ADMIN}))


def token_hash(secret: str) -> str:
    """Hex SHA-256 of a token. A token is 32 random bytes, far beyond guessing, so a fast hash is
    enough: a slow, salted password hash would only slow down every request."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(names: Iterable[str]) -> tuple[Scope, ...]:
    """The scopes named (in their declared order, each once); ``InvalidInput`` for none or an unknown one."""
    wanted = set()
    for name in names:
        try:
            wanted.add(Scope(name.strip().lower()))
        except ValueError:
            raise InvalidInput(f"unknown scope {name!r}: use {', '.join(Scope)}") from None
    if not wanted:
        raise InvalidInput(f"a token needs at least one scope ({', '.join(Scope)})")
    return tuple(scope for scope in Scope if scope in wanted)


class TokenService:
    """The token use cases over the store; one per process (it caches whether any token is active)."""

    def __init__(
        self, store: Store, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._clock = clock
        self._monotonic = monotonic
        self._active: tuple[float, bool] | None = None  # (checked at, answer)

    def create(self, name: str, scopes: Iterable[str], *, actor: str, source: str) -> tuple[TokenRecord, str]:
        """A new token and its secret, which is not kept, audited as ``actor``'s through ``source``;
        ``InvalidInput`` for a bad name or scope, ``Conflict`` when the name is taken (by a revoked token too)."""
        if not NAME.fullmatch(name):
            raise InvalidInput("a token name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        parsed = parse_scopes(scopes)
        secret = SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
        record = self._store.add_token(
            name=name, scopes=[str(scope) for scope in parsed], token_hash=token_hash(secret),
            prefix=secret[:PREFIX_LENGTH], actor=Actor(actor, source),
        )
        self._active = None
        return record, secret

    def authenticate(self, secret: str) -> TokenGrant | None:
        """The grant of a named token that is not revoked; None for anything else."""
        if not secret.startswith(SECRET_PREFIX):
            return None
        return self.authenticate_digest(token_hash(secret))

    def authenticate_digest(self, digest: str) -> TokenGrant | None:
        """The grant of the named token whose SHA-256 is ``digest`` (as :func:`token_hash` gives it), if it
        is not revoked: what a console session holds instead of the secret. None for anything else."""
        if not HEX_DIGEST.fullmatch(digest):
            return None
        record = self._store.token_by_hash(digest)
        # The lookup is by the hash of the secret, never by the secret; the comparison is constant-time anyway.
        if record is None or not hmac.compare_digest(record.token_hash, digest) or record.revoked_at is not None:
            return None
        self._touch(record)
        self._active = (self._monotonic(), True)
        return TokenGrant(f"token:{record.name}", frozenset(Scope(s) for s in record.scopes if s in set(Scope)))

    def list(self) -> list[TokenRecord]:
        return self._store.list_tokens()

    def revoke(self, name: str, *, actor: str, source: str) -> tuple[TokenRecord, bool]:
        """Revoke the token, audited as ``actor``'s through ``source``; whether it was revoked now (False:
        earlier, and nothing is audited). ``NotFound`` when there is none."""
        now = self._clock()
        record = self._store.revoke_token(name, at=now, actor=Actor(actor, source))
        if record is None:
            raise NotFound(f"no token named {name!r}")
        self._active = None
        return record, record.revoked_at == now.astimezone(UTC)

    def any_active(self) -> bool:
        """Whether a named token that is not revoked exists, as of at most ``ACTIVE_CACHE_SECONDS`` ago:
        asked on requests no token admits, which must not each cost a query."""
        now = self._monotonic()
        if self._active is None or now - self._active[0] > ACTIVE_CACHE_SECONDS:
            self._active = (now, self._store.has_active_tokens())
        return self._active[1]

    def _touch(self, record: TokenRecord) -> None:
        now = self._clock()
        if record.last_used_at is None or now - record.last_used_at >= TOUCH_INTERVAL:
            self._store.touch_token(record.id, at=now, unless_since=now - TOUCH_INTERVAL)
