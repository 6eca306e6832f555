"""The ``intune`` validator: Intune decides every request (intune-api.md §5).

Fail closed: only ``Success`` from validateRequest lets a certificate be issued. Every other code, an
Entra ID authentication failure or an unusable answer refuses the request (SCEP FAILURE badRequest,
with the Intune code in the log). Only "Intune could not be reached" is a ValidatorUnavailable, which a
profile with ``on_validator_unavailable: pending`` turns into PENDING and background retries.

The validator talks to Intune through the two operations it needs and reports failures to a notifier
that must not lose them; the composition root hands both over (:class:`IntuneLink`): the Intune client
and the durable notification outbox. What Intune answered (its code and the activity id of the call) is
written down in a journal too, the store's steps of the enrollment; a journal that cannot write is
logged and never changes the outcome.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509

from scep_server.challenge import (
    ChallengeValidator,
    IssuedCertificate,
    Resources,
    ValidationRequest,
    register,
)
from scep_server.config.model import ChallengeConfig
from scep_server.errors import (
    ChallengeRejected,
    ConfigError,
    IntuneAuthError,
    IntuneError,
    IntuneUnavailable,
    StoreError,
    ValidatorUnavailable,
)
from scep_server.intune.messages import NotificationResult, ScepActionResult, ValidationResult
from scep_server.store.steps import EnrollmentStep

__all__ = [
    "EnrollmentJournal",
    "FailureNotifier",
    "IntuneChallenge",
    "IntuneChallengeConfig",
    "IntuneLink",
    "IntuneValidationClient",
]

SUCCESS_NOTIFICATION = "successNotification"

log = logging.getLogger("scep_server.challenge.intune")


class IntuneValidationClient(Protocol):
    """The Intune operations the validator calls (:class:`scep_server.intune.client.IntuneClient`)."""

    def validate_request(self, transaction_id: str, csr_der: bytes) -> ValidationResult: ...

    def send_success_notification(
        self, *, transaction_id: str, csr_der: bytes, certificate: x509.Certificate,
        issuing_ca: str, ca_configuration: str, certificate_authority: str,
    ) -> NotificationResult: ...


class FailureNotifier(Protocol):
    """Where failure notifications go: it must deliver each eventually, across outages and restarts."""

    def enqueue_failure(
        self, *, transaction_id: str, csr_der: bytes, hresult: int, description: str, profile: str | None = None
    ) -> object: ...


class EnrollmentJournal(Protocol):
    """Where the steps of an enrollment are written down (:meth:`scep_server.store.Store.record_step`)."""

    def record_step(
        self, *, profile: str, transaction_id: str, step: str, outcome: str, intune_code: str | None = None,
        activity_id: str | None = None, detail: str | None = None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class IntuneLink:
    """What every ``intune`` profile shares: the client, the failure notifier, the NDES-style
    ``host\\CA name`` reported to Intune as caConfiguration, and the journal of Intune's answers."""

    client: IntuneValidationClient
    notifier: FailureNotifier
    ca_configuration: str
    journal: EnrollmentJournal | None = None


@dataclass(frozen=True, slots=True)
class IntuneChallengeConfig(ChallengeConfig):
    """``challenge: {type: intune}``: the settings are the common ones; Intune's are the ``intune`` section."""

    needs_intune = True

    type: str = "intune"


@register
class IntuneChallenge:
    """Asks Intune's ScepRequestValidationFEService about each request and reports the outcome."""

    name = "intune"
    # Intune decides every certificate: a RenewalReq is asked about too (fail closed without a challenge).
    confirms_issuance = True
    validates_renewals = True
    settings_class = IntuneChallengeConfig
    may_be_unavailable = True

    def __init__(
        self, client: IntuneValidationClient, notifier: FailureNotifier, *, ca_configuration: str,
        journal: EnrollmentJournal | None = None,
    ) -> None:
        self._client = client
        self._notifier = notifier
        self._ca_configuration = ca_configuration
        self._journal = journal

    @classmethod
    def from_settings(cls, profile: str, settings: ChallengeConfig, resources: Resources) -> ChallengeValidator:
        """The validator over the process's :class:`IntuneLink`; ConfigError when there is none."""
        link = resources.find(IntuneLink)
        if link is None:
            raise ConfigError(f"profile {profile!r}: the intune challenge needs the intune settings")
        return cls(link.client, link.notifier, ca_configuration=link.ca_configuration, journal=link.journal)

    def validate(self, request: ValidationRequest) -> None:
        """validateRequest; its answer is journalled as a ``validated`` step whose outcome is
        ``accepted``, ``refused`` (with Intune's code), ``unavailable`` or ``error``."""
        try:
            result = self._client.validate_request(request.transaction_id, request.csr_der)
        except IntuneUnavailable as exc:
            log.warning("Intune unavailable (transaction=%s): %s", request.transaction_id, exc.detail)
            self._validated(request, "unavailable", activity_id=exc.activity_id, detail=exc.detail)
            raise ValidatorUnavailable("Intune is unavailable", retry_after=exc.retry_after) from exc
        except IntuneAuthError as exc:
            log.error(
                "Entra ID authentication failed; no certificate is issued until the app credentials are fixed: %s",
                exc.detail,
            )
            self._validated(request, "error", activity_id=exc.activity_id, detail="Entra ID authentication failed")
            # The device sees a generic text: Entra ID's own message stays in the server's log.
            raise ChallengeRejected(
                "the challenge could not be validated (server configuration)", reason="EntraIdAuthenticationFailed"
            ) from exc
        except IntuneError as exc:
            log.error("Intune's answer was unusable (transaction=%s): %s", request.transaction_id, exc.detail)
            self._validated(request, "error", activity_id=exc.activity_id, detail=exc.detail)
            raise ChallengeRejected("the challenge could not be validated", reason="IntuneProtocolError") from exc
        if not result.succeeded:
            log.warning(
                "Intune refused profile=%s transaction=%s code=%s activity=%s description=%r",
                request.profile, request.transaction_id, result.code, result.activity_id, result.description,
            )
            self._validated(request, "refused", result=result)
            raise ChallengeRejected(f"Intune refused the challenge: {result.code}", reason=result.code)
        log.info(
            "Intune accepted profile=%s transaction=%s activity=%s",
            request.profile, request.transaction_id, result.activity_id,
        )
        self._validated(request, "accepted", result=result)

    def notify_issued(self, request: ValidationRequest, issued: IssuedCertificate) -> None:
        """successNotification; anything but an acknowledgement means the device must not get it.
        Journalled as ``notified`` (acknowledged) or ``notification_failed`` (refused, unavailable)."""
        subject = f"{SUCCESS_NOTIFICATION} of certificate {issued.certificate.serial_number:x}"
        try:
            result = self._client.send_success_notification(
                transaction_id=request.transaction_id,
                csr_der=request.csr_der,
                certificate=issued.certificate,
                issuing_ca=issued.issuer.subject.rfc4514_string(),
                ca_configuration=self._ca_configuration,
                certificate_authority=issued.ca_name,
            )
        except IntuneError as exc:
            self._journalled(request, EnrollmentStep.NOTIFICATION_FAILED, "unavailable",
                             activity_id=exc.activity_id, detail=f"{subject}: {exc.detail}")
            raise ValidatorUnavailable(f"the success notification failed: {exc.detail}") from exc
        if not result.succeeded:
            self._journalled(request, EnrollmentStep.NOTIFICATION_FAILED, "refused", intune_code=result.code,
                             activity_id=result.activity_id, detail=f"{subject}: {result.description}")
            raise ValidatorUnavailable(f"Intune answered {result.code} to the success notification")
        self._journalled(request, EnrollmentStep.NOTIFIED, "acknowledged", intune_code=result.code,
                         activity_id=result.activity_id, detail=subject)

    def notify_failed(self, request: ValidationRequest, hresult: int, description: str) -> None:
        """failureNotification, through the durable notifier: it is never dropped."""
        self._notifier.enqueue_failure(
            transaction_id=request.transaction_id, csr_der=request.csr_der, hresult=hresult, description=description,
            profile=request.profile,
        )

    def _validated(
        self, request: ValidationRequest, outcome: str, *, result: ScepActionResult | None = None,
        activity_id: str | None = None, detail: str | None = None,
    ) -> None:
        code = None
        if result is not None:
            code, activity_id, detail = result.code, result.activity_id, result.description or None
        self._journalled(request, EnrollmentStep.VALIDATED, outcome, intune_code=code, activity_id=activity_id,
                         detail=detail)

    def _journalled(
        self, request: ValidationRequest, step: EnrollmentStep, outcome: str, *, intune_code: str | None = None,
        activity_id: str | None = None, detail: str | None = None,
    ) -> None:
        """Write the step down if there is a journal; a failure to do so is logged, never raised."""
        if self._journal is None:
            return
        try:
            self._journal.record_step(
                profile=request.profile, transaction_id=request.transaction_id, step=step.value, outcome=outcome,
                intune_code=intune_code, activity_id=activity_id, detail=detail,
            )
        except (StoreError, ValueError) as exc:  # ValueError: a value longer than its column
            log.error("the %s step of transaction %s was not recorded: %s", step.value, request.transaction_id, exc)
