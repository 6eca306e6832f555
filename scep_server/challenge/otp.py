"""The ``otp`` validator: one-time challenge passwords, minted by ``scep-server otp create`` (or the admin
API and the console) and consumed by the first enrollment that uses them (docs/otp-challenge.md).

A request is accepted when its challengePassword is an unused, unexpired password of the profile and,
if the password is bound to a subject pattern, the pattern matches the CSR's subject or one of its
subjectAltName values; the password is then used up, atomically in the store, so that of two replicas
racing for it exactly one wins. Everything else is refused (SCEP FAILURE badRequest) without using it
up: a pattern mismatch leaves the password to a request that matches.

Patterns are shell-style globs matched with :func:`fnmatch.fnmatchcase` (case-sensitive; ``*`` any run
of characters, ``?`` one character, ``[seq]`` one of seq) against the subject as an RFC 4514 string
(most specific first: ``CN=device-01,O=Example``) and against each SAN value without its kind
(``device-01.example.com``, ``user@example.com``, ``192.0.2.1``).

The enrollment a password was used for may be decided again (a request first tried in one step and
then on the claimed path, or a device's retry of a transaction nothing was stored for): a password
already used by the same transaction is accepted again. When issuance fails after the password was
accepted (``notify_failed``: the CSR breaks the profile's policy, say), the password is given back.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from cryptography import x509

from scep_server.ca.csr import describe_sans
from scep_server.challenge import (
    ChallengeValidator,
    IssuedCertificate,
    Resources,
    ValidationRequest,
    challenge_password,
    register,
)
from scep_server.config.model import ChallengeConfig
from scep_server.errors import ChallengeRejected, StoreError, ValidatorUnavailable
from scep_server.store.otp import OtpRecord, OtpRepository

__all__ = ["OtpChallenge", "OtpChallengeConfig", "otp_hash", "pattern_matches"]

log = logging.getLogger("scep_server.challenge.otp")


def otp_hash(password: str) -> str:
    """Hex SHA-256 of a one-time password, as the store keeps it. A password is 160 random bits, far
    beyond guessing, so a fast hash is enough."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()


PATTERN_SEPARATOR = "|"


def pattern_matches(pattern: str, csr: x509.CertificateSigningRequest) -> bool:
    """Whether every name the CSR asks to be certified for matches ``pattern``: its RFC 4514 subject (unless
    empty) and each subjectAltName value. ``pattern`` is one glob or several separated by ``|``, any of
    which a name may match: ``CN=kiosk-*|*.kiosk.example``. A password bound to one name must not
    certify others beside it, so one matching name among foreign ones is not enough."""
    alternatives = [alternative for alternative in pattern.split(PATTERN_SEPARATOR) if alternative]
    subject = csr.subject.rfc4514_string()
    names = ([subject] if subject else []) + [described.partition(":")[2] for described in describe_sans(csr)]
    if not names or not alternatives:
        return False
    return all(any(fnmatchcase(name, alternative) for alternative in alternatives) for name in names)


@dataclass(frozen=True, slots=True)
class OtpChallengeConfig(ChallengeConfig):
    """``challenge: {type: otp}``: the passwords are in the store; the settings are the common ones."""

    type: str = "otp"


@register
class OtpChallenge:
    """Accept a request whose challengePassword is one of the profile's one-time passwords, and use it up."""

    name = "otp"
    confirms_issuance = False
    # A RenewalReq is vouched for by the certificate that signs it; it needs no new password.
    validates_renewals = False
    settings_class = OtpChallengeConfig
    may_be_unavailable = False

    def __init__(
        self, profile: str, ledger: OtpRepository | None, *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._profile = profile
        self._ledger = ledger
        self._clock = clock

    @classmethod
    def from_settings(cls, profile: str, settings: ChallengeConfig, resources: Resources) -> ChallengeValidator:
        """The validator over the process's :class:`OtpRepository`. Without one (a configuration check
        builds the validators without a store) it refuses to decide anything."""
        if not isinstance(settings, OtpChallengeConfig):
            raise TypeError(f"the otp challenge takes OtpChallengeConfig, not {type(settings).__name__}")
        return cls(profile, resources.find(OtpRepository))

    def validate(self, request: ValidationRequest) -> None:
        offered = challenge_password(request.csr)
        if not offered:
            raise ChallengeRejected("the request has no challengePassword", reason="ChallengePasswordMissing")
        digest = otp_hash(offered)
        try:
            self._decide(request, digest)
        except StoreError as exc:
            raise ValidatorUnavailable(f"the one-time passwords cannot be read: {exc}") from exc

    def notify_issued(self, request: ValidationRequest, issued: IssuedCertificate) -> None:
        """The password was used up when the request was accepted."""

    def notify_failed(self, request: ValidationRequest, hresult: int, description: str) -> None:
        """No certificate came of the request: its password may be used again."""
        offered = challenge_password(request.csr)
        if not offered or self._ledger is None:
            return
        try:
            released = self._ledger.release_otp(
                secret_hash=otp_hash(offered), profile=self._profile, transaction_id=request.transaction_id
            )
        except StoreError as exc:
            log.error("profile=%s transaction=%s: the one-time password could not be given back after a failed "
                      "issuance: %s", self._profile, request.transaction_id, exc)
            return
        if released:
            log.info("profile=%s transaction=%s: issuance failed; its one-time password may be used again",
                     self._profile, request.transaction_id)

    def _decide(self, request: ValidationRequest, digest: str) -> None:
        if self._ledger is None:
            raise ValidatorUnavailable("the otp challenge has no store of one-time passwords")
        now = self._clock()
        record = _usable(self._ledger.find_otp(digest), self._profile, request.transaction_id, now)
        if record.subject_pattern is not None and not pattern_matches(record.subject_pattern, request.csr):
            raise ChallengeRejected(
                f"the one-time password {record.id} is bound to subject pattern {record.subject_pattern!r}, which "
                "the request's subject or one of its subjectAltNames does not match", reason="OtpSubjectMismatch",
            )
        if record.used_at is not None:
            return  # used by this very transaction: its enrollment is being decided again
        if self._ledger.consume_otp(
            secret_hash=digest, profile=self._profile, transaction_id=request.transaction_id, now=now
        ):
            log.info("profile=%s transaction=%s: one-time password %d used", self._profile,
                     request.transaction_id, record.id)
            return
        # Changed since it was read: used by a concurrent request (of this transaction: accepted) or expired.
        again = _usable(self._ledger.find_otp(digest), self._profile, request.transaction_id, now)
        if again.used_by_transaction != request.transaction_id:
            raise ChallengeRejected(f"the one-time password {record.id} was used already", reason="OtpUsed")


def _usable(record: OtpRecord | None, profile: str, transaction_id: str, now: datetime) -> OtpRecord:
    """``record``, unless it is unknown, another profile's, used by another transaction or expired (refused)."""
    if record is None or record.profile != profile:
        raise ChallengeRejected("the challengePassword is not a one-time password of this profile",
                                reason="OtpUnknown")
    if record.used_at is not None:
        if record.used_by_transaction == transaction_id:
            return record
        raise ChallengeRejected(f"the one-time password {record.id} was used already", reason="OtpUsed")
    if record.expires_at <= now:
        raise ChallengeRejected(f"the one-time password {record.id} has expired", reason="OtpExpired")
    return record
