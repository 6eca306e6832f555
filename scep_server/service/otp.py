"""One-time challenge passwords of the ``otp`` profiles: minted, listed, revoked and pruned by the CLI,
the admin API and the console; used up by the ``otp`` validator (:mod:`scep_server.challenge.otp`).

A password is 20 random bytes in base32 (32 characters of A-Z and 2-7: a PrintableString every SCEP
client can send), shown once when it is made; the store keeps only its SHA-256. Minting is audited as
``otp.create`` with the profile, the count and the lifetime, never the passwords.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from scep_server.challenge.otp import OtpChallenge, otp_hash
from scep_server.config import ServerConfig
from scep_server.errors import InvalidInput, NotFound
from scep_server.store import Actor, Store
from scep_server.store.otp import MAX_BATCH, OtpRecord, OtpRepository

__all__ = [
    "MAX_COUNT",
    "MAX_TTL",
    "MIN_TTL",
    "OtpService",
    "OtpState",
    "otp_profiles",
    "parse_ttl",
]

SECRET_BYTES = 20
MIN_TTL = timedelta(minutes=1)
MAX_TTL = timedelta(days=30)
MAX_COUNT = MAX_BATCH
MAX_PATTERN_LENGTH = 512
PRUNE_AFTER = timedelta(days=30)  # how long an expired or used password is kept by default
_TTL = re.compile(r"(\d{1,7})([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class OtpState(StrEnum):
    UNUSED = "unused"
    USED = "used"
    EXPIRED = "expired"  # or revoked: a revoked password expires at once


def otp_profiles(config: ServerConfig) -> tuple[str, ...]:
    """The names of the profiles whose challenge is ``otp``, in configuration order."""
    return tuple(p.name for p in config.profiles if p.challenge.type == OtpChallenge.name)


def parse_ttl(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``7d``: a lifetime; ``InvalidInput`` otherwise (range checked by ``create``)."""
    found = _TTL.fullmatch(text.strip().lower())
    if found is None:
        raise InvalidInput(f"a lifetime is a number and s, m, h or d (like 15m or 1h), not {text!r}")
    return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


class OtpService:
    """The one-time password use cases over the store, for the profiles in ``profiles`` (``otp_profiles``)."""

    def __init__(
        self, store: Store, *, profiles: Iterable[str], clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._ledger = OtpRepository(store.engine)
        self._profiles = tuple(profiles)
        self._clock = clock

    @property
    def profiles(self) -> tuple[str, ...]:
        """The profiles passwords may be made for."""
        return self._profiles

    def create(
        self, profile: str, ttl: timedelta, subject_pattern: str | None, count: int, actor: str, source: str
    ) -> list[str]:
        """``count`` (1-100) new passwords of ``profile``, valid for ``ttl`` (1 minute to 30 days), bound to
        ``subject_pattern`` if given; audited as ``actor``'s through ``source``. The passwords are not kept:
        this is the only time they are seen. ``InvalidInput`` for a profile that is not an otp one, or an
        argument out of range."""
        self._check_profile(profile)
        if not MIN_TTL <= ttl <= MAX_TTL:
            raise InvalidInput("a one-time password lives from 1 minute to 30 days")
        if not 1 <= count <= MAX_COUNT:
            raise InvalidInput(f"from 1 to {MAX_COUNT} one-time passwords at a time")
        pattern = _checked_pattern(subject_pattern)
        passwords = [_new_password() for _ in range(count)]
        self._ledger.add_otps(
            profile=profile, secret_hashes=[otp_hash(password) for password in passwords], subject_pattern=pattern,
            expires_at=self._clock() + ttl, actor=Actor(actor, source), ttl_seconds=int(ttl.total_seconds()),
        )
        return passwords

    def list(self, *, profile: str | None = None, before_id: int | None = None, limit: int = 100) -> list[OtpRecord]:
        """Passwords (never their secrets), newest first; ``before_id`` pages on."""
        if not 1 <= limit <= 1000:
            raise InvalidInput("limit must be from 1 to 1000")
        return self._ledger.list_otps(profile=profile, before_id=before_id, limit=limit)

    def state(self, record: OtpRecord) -> OtpState:
        """Whether ``record`` is unused, used, or expired (revoked ones too) now."""
        if record.used_at is not None:
            return OtpState.USED
        return OtpState.UNUSED if record.expires_at > self._clock() else OtpState.EXPIRED

    def revoke(self, otp_id: int, *, actor: str, source: str) -> tuple[OtpRecord, bool]:
        """Expire an unused password now, audited as ``actor``'s through ``source``; whether it changed now
        (False: it was used or expired already). ``NotFound`` when there is none."""
        revoked = self._ledger.revoke_otp(otp_id, at=self._clock(), actor=Actor(actor, source))
        if revoked is None:
            raise NotFound(f"no one-time password {otp_id}")
        return revoked

    def prune(self, *, older_than: timedelta = PRUNE_AFTER, actor: str, source: str) -> int:
        """Delete the passwords that expired more than ``older_than`` ago (used or not), audited; how many."""
        if older_than < timedelta(0):
            raise InvalidInput("older_than must not be negative")
        return self._ledger.prune_otps(expired_before=self._clock() - older_than, actor=Actor(actor, source))

    def _check_profile(self, profile: str) -> None:
        if profile not in self._profiles:
            known = ", ".join(self._profiles) or "none"
            raise InvalidInput(f"profile {profile!r} does not use the otp challenge (the otp profiles: {known})")


def _new_password() -> str:
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def _checked_pattern(pattern: str | None) -> str | None:
    if pattern is None:
        return None
    if not pattern.strip() or len(pattern) > MAX_PATTERN_LENGTH or not pattern.isprintable():
        raise InvalidInput(f"a subject pattern is 1 to {MAX_PATTERN_LENGTH} printable characters")
    return pattern
