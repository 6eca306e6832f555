"""The web console's sign-in: who a session is, how long it lasts, and the key its cookie is signed with.

An operator signs in with an API token: the configured ``admin_token`` or a named token
(``scep_server.service.tokens``) with at least the ``read`` scope. The session, kept in a signed cookie,
holds the token's SHA-256 (what the store keeps), never the token, and every request checks it again:
a revoked named token, or an ``admin_token`` changed in the configuration, ends the sessions made with
it at their next request. A session lasts at most :data:`ABSOLUTE_LIFETIME` from its sign-in and
:data:`IDLE_LIFETIME` from its last request.

Every session, the sign-in form's one included, carries a random CSRF token that each form posts back
(:func:`csrf_matches` compares them in constant time); a sign-in starts a new session with a new one.

The search forms' fields (query strings of text) become the report queries here: a time is an ISO 8601
time with its zone or a duration (``7d``: back from now; for ``expires_before``, ahead of now), a bad
value a ``ValueError`` naming the field.

The cookie's signing key is 32 random bytes in ``<data_dir>/console-session.key`` (0600), made on first
use: written whole to a temporary file, then linked into place, which fails when another process got
there first, so every worker of a server (gunicorn's) uses the one that won, and no reader ever sees
half a key. Deleting the file ends every session at the next restart.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeGuard

from scep_server.errors import CAError, ConfigError
from scep_server.files import KEY_FILE_MODE, stage
from scep_server.service.enrollments import EnrollmentSearch
from scep_server.service.reports import (
    REPORT_STATUSES,
    AuditQuery,
    CertificateQuery,
    ReportStatus,
    RevocationQuery,
    parse_duration,
    parse_time,
)
from scep_server.service.tokens import ADMIN_TOKEN_GRANT, Scope, TokenGrant, TokenService, token_hash

__all__ = [
    "ABSOLUTE_LIFETIME",
    "DEFAULT_PAGE_SIZE",
    "IDLE_LIFETIME",
    "PAGE_SIZES",
    "SESSION_KEY_FILE",
    "ConsoleAuth",
    "ConsoleSession",
    "SessionEnded",
    "SignInRefused",
    "SignedIn",
    "audit_query",
    "certificate_query",
    "csrf_matches",
    "enrollment_search",
    "form_text",
    "new_csrf_token",
    "revocation_query",
    "session_secret",
]

log = logging.getLogger("scep_server.console")

SESSION_KEY_FILE = "console-session.key"
SESSION_KEY_BYTES = 32
CSRF_BYTES = 32
ABSOLUTE_LIFETIME = timedelta(hours=8)
IDLE_LIFETIME = timedelta(hours=1)
CLOCK_SKEW = timedelta(minutes=5)  # a session "signed in" later than this from now was not made by this clock
MAX_SECRET_LENGTH = 512  # far beyond any token; longer input is not hashed
PAGE_SIZES = (25, 50, 100, 250)  # the page sizes the search forms offer
DEFAULT_PAGE_SIZE = 50


def session_secret(data_dir: Path) -> bytes:
    """The console's cookie-signing key in ``data_dir``, made on first use (see the module's docstring).

    ``ConfigError`` when the file cannot be made or read, or does not hold a key.
    """
    path = data_dir / SESSION_KEY_FILE
    if not path.exists():
        _create_key(path)
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the console session key {path}: {exc.strerror}") from exc
    if len(key) != SESSION_KEY_BYTES:
        raise ConfigError(f"{path} does not hold a {SESSION_KEY_BYTES}-byte key: delete it to make a new one")
    return key


def _create_key(path: Path) -> None:
    try:
        staged = stage(path, secrets.token_bytes(SESSION_KEY_BYTES), KEY_FILE_MODE)
    except CAError as exc:  # a directory we cannot write
        raise ConfigError(f"cannot create the console session key {path}: {exc}") from exc
    try:
        with contextlib.suppress(FileExistsError):  # another worker's key is in place: use that one
            os.link(staged.tmp, path)
            log.info("console: created the session key %s", path)
    except OSError as exc:
        raise ConfigError(f"cannot create the console session key {path}: {exc.strerror}") from exc
    finally:
        staged.discard()


def new_csrf_token() -> str:
    return secrets.token_urlsafe(CSRF_BYTES)


def csrf_matches(expected: str | None, offered: str | None) -> bool:
    """Whether a form posted the session's CSRF token; constant-time, and never for a missing one."""
    if not expected or not offered:
        return False
    return hmac.compare_digest(expected.encode(), offered.encode())


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """What the console's cookie holds: the CSRF token and, once signed in, the token's SHA-256 and times."""

    csrf: str
    digest: str | None = None
    signed_in_at: datetime | None = None
    last_seen_at: datetime | None = None

    @classmethod
    def anonymous(cls) -> ConsoleSession:
        """A session before sign-in: only the sign-in form's CSRF token."""
        return cls(new_csrf_token())

    @property
    def signed_in(self) -> bool:
        return self.digest is not None

    def to_cookie(self) -> dict[str, Any]:
        """The session as compact JSON-ready values (times as Unix seconds)."""
        values: dict[str, Any] = {"c": self.csrf}
        if self.digest is not None and self.signed_in_at is not None and self.last_seen_at is not None:
            values |= {"d": self.digest, "a": int(self.signed_in_at.timestamp()),
                       "s": int(self.last_seen_at.timestamp())}
        return values

    @classmethod
    def from_cookie(cls, values: object) -> ConsoleSession | None:
        """The session :meth:`to_cookie` wrote; None for anything else (the signature held, so this is
        only a cookie of another version)."""
        if not isinstance(values, Mapping) or not isinstance(values.get("c"), str):
            return None
        digest, signed_in, seen = values.get("d"), values.get("a"), values.get("s")
        if digest is None:
            return cls(values["c"])
        if not isinstance(digest, str) or not _timestamp(signed_in) or not _timestamp(seen):
            return None
        return cls(values["c"], digest, datetime.fromtimestamp(signed_in, UTC), datetime.fromtimestamp(seen, UTC))


def _timestamp(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**37


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A session and the grant of its token."""

    session: ConsoleSession
    grant: TokenGrant


@dataclass(frozen=True, slots=True)
class SignInRefused:
    """Why a sign-in failed, in words for the operator; ``forbidden``: the token is valid but lacks a scope."""

    reason: str
    forbidden: bool = False


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """Why there is no session (any more): ``required`` (never signed in), ``lifetime`` (8 hours since the
    sign-in), ``idle`` (an hour since the last request) or ``token`` (its token is revoked or changed)."""

    code: str


class ConsoleAuth:
    """Sign-in and the per-request session check over the named tokens and the configured ``admin_token``
    (``admin_token`` is asked for on each use, so a changed one counts at once)."""

    def __init__(
        self, tokens: TokenService, admin_token: Callable[[], str | None], *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._tokens = tokens
        self._admin_token = admin_token
        self._clock = clock

    def sign_in(self, secret: str) -> SignedIn | SignInRefused:
        """A new session for the token ``secret`` (a fresh CSRF token too), if it may read."""
        secret = secret.strip()
        found = self._grant_of(secret) if 0 < len(secret) <= MAX_SECRET_LENGTH else None
        if found is None:
            return SignInRefused("That is not a valid API token.")
        grant, digest = found
        if not grant.allows(Scope.READ):
            return SignInRefused(f"The token of {grant.actor} lacks the read scope the console needs.", True)
        now = self._clock()
        return SignedIn(ConsoleSession(new_csrf_token(), digest, now, now), grant)

    def resume(self, session: ConsoleSession) -> SignedIn | SessionEnded:
        """The signed-in ``session`` with its last request now, if it has not ended (see the module)."""
        if session.digest is None or session.signed_in_at is None or session.last_seen_at is None:
            return SessionEnded("required")
        now = self._clock()
        if not session.signed_in_at - CLOCK_SKEW <= now < session.signed_in_at + ABSOLUTE_LIFETIME:
            return SessionEnded("lifetime")
        if now >= session.last_seen_at + IDLE_LIFETIME:
            return SessionEnded("idle")
        grant = self._grant_by_digest(session.digest)
        if grant is None or not grant.allows(Scope.READ):
            return SessionEnded("token")
        return SignedIn(replace(session, last_seen_at=now), grant)

    def _grant_of(self, secret: str) -> tuple[TokenGrant, str] | None:
        expected = self._admin_token()
        if expected and hmac.compare_digest(secret.encode(), expected.encode()):
            return ADMIN_TOKEN_GRANT, token_hash(expected)
        grant = self._tokens.authenticate(secret)
        return None if grant is None else (grant, token_hash(secret))

    def _grant_by_digest(self, digest: str) -> TokenGrant | None:
        expected = self._admin_token()
        if expected and hmac.compare_digest(digest.encode(), token_hash(expected).encode()):
            return ADMIN_TOKEN_GRANT
        return self._tokens.authenticate_digest(digest)


# -- the search forms -----------------------------------------------------------------------------------

Form = Mapping[str, str]


def certificate_query(form: Form, now: datetime) -> CertificateQuery:
    status = form_text(form, "status")
    if status is not None and status not in REPORT_STATUSES:
        raise ValueError(f"status must be one of {', '.join(REPORT_STATUSES)}")
    return CertificateQuery(
        serial=form_text(form, "serial"), subject=form_text(form, "subject"), san=form_text(form, "san"),
        thumbprint=form_text(form, "thumbprint"), profile=form_text(form, "profile"),
        status=ReportStatus(status) if status else None,
        issued_since=_past(form, "issued_since", now), issued_until=_past(form, "issued_until", now),
        expires_before=_ahead(form, "expires_before", now), device_id=form_text(form, "device_id"),
        cursor=form_text(form, "cursor"), limit=_page_size(form),
    )


def enrollment_search(form: Form, now: datetime) -> EnrollmentSearch:
    return EnrollmentSearch(
        since=_past(form, "since", now), until=_past(form, "until", now), profile=form_text(form, "profile"),
        outcome=form_text(form, "outcome"), fail_info=form_text(form, "fail_info"),
        intune_code=form_text(form, "intune_code"), requester_ip=form_text(form, "requester_ip"),
        transaction_id=form_text(form, "transaction_id"), cursor=form_text(form, "cursor"), limit=_page_size(form),
    )


def audit_query(form: Form, now: datetime) -> AuditQuery:
    return AuditQuery(
        action=form_text(form, "action"), actor=form_text(form, "actor"), source=form_text(form, "source"),
        since=_past(form, "since", now), until=_past(form, "until", now), cursor=form_text(form, "cursor"),
        limit=_page_size(form),
    )


def revocation_query(form: Form, now: datetime) -> RevocationQuery:
    return RevocationQuery(
        since=_past(form, "since", now), until=_past(form, "until", now), actor=form_text(form, "actor"),
        source=form_text(form, "source"), cursor=form_text(form, "cursor"), limit=_page_size(form),
    )


def form_text(form: Form, name: str) -> str | None:
    """A field's text without surrounding blanks; None when it is missing or blank."""
    value = form.get(name, "").strip()
    return value or None


def _past(form: Form, name: str, now: datetime) -> datetime | None:
    value = form_text(form, name)
    return None if value is None else parse_time(value, name, now=now)


def _ahead(form: Form, name: str, now: datetime) -> datetime | None:
    value = form_text(form, name)
    if value is None:
        return None
    try:
        return now + parse_duration(value, name)
    except ValueError:
        return parse_time(value, name, now=now)


def _page_size(form: Form) -> int:
    value = form_text(form, "limit")
    if value is None:
        return DEFAULT_PAGE_SIZE
    if value not in {str(size) for size in PAGE_SIZES}:
        raise ValueError(f"limit must be one of {', '.join(str(size) for size in PAGE_SIZES)}")
    return int(value)
