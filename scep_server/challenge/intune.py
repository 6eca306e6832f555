"""The ``intune`` validator: Intune decides every request (intune-api.md §5).

Fail closed: only ``Success`` from validateRequest lets a certificate be issued. Every other code, an
Entra ID authentication failure or an unusable answer refuses the request (SCEP FAILURE badRequest,
with the Intune code in the log). Only "Intune could not be reached" is an UpstreamError, which a
profile with ``on_intune_unavailable: pending`` turns into PENDING and background retries.
"""

from __future__ import annotations

import logging

from scep_server.challenge import IssuedCertificate, ValidationRequest
from scep_server.errors import ChallengeRejected, IntuneAuthError, IntuneError, IntuneUnavailable, UpstreamError
from scep_server.intune.client import IntuneClient
from scep_server.service.intune_outbox import NotificationOutbox

log = logging.getLogger("scep_server.challenge.intune")


class IntuneChallenge:
    """Asks Intune's ScepRequestValidationFEService about each request and reports the outcome."""

    name = "intune"
    # Intune decides every certificate: a RenewalReq is asked about too (fail closed without a challenge).
    validates_renewals = True

    def __init__(self, client: IntuneClient, outbox: NotificationOutbox, *, ca_configuration: str) -> None:
        self._client = client
        self._outbox = outbox
        self._ca_configuration = ca_configuration

    def validate(self, request: ValidationRequest) -> None:
        try:
            result = self._client.validate_request(request.transaction_id, request.csr_der)
        except IntuneUnavailable as exc:
            log.warning("Intune unavailable (transaction=%s): %s", request.transaction_id, exc.detail)
            raise UpstreamError("Intune is unavailable", retry_after=exc.retry_after) from exc
        except IntuneAuthError as exc:
            log.error(
                "Entra ID authentication failed; no certificate is issued until the app credentials are fixed: %s",
                exc.detail,
            )
            # The device sees a generic text: Entra ID's own message stays in the server's log.
            raise ChallengeRejected(
                "the challenge could not be validated (server configuration)", reason="EntraIdAuthenticationFailed"
            ) from exc
        except IntuneError as exc:
            log.error("Intune's answer was unusable (transaction=%s): %s", request.transaction_id, exc.detail)
            raise ChallengeRejected("the challenge could not be validated", reason="IntuneProtocolError") from exc
        if not result.succeeded:
            log.warning(
                "Intune refused profile=%s transaction=%s code=%s activity=%s description=%r",
                request.profile, request.transaction_id, result.code, result.activity_id, result.description,
            )
            raise ChallengeRejected(f"Intune refused the challenge: {result.code}", reason=result.code)
        log.info(
            "Intune accepted profile=%s transaction=%s activity=%s",
            request.profile, request.transaction_id, result.activity_id,
        )

    def notify_issued(self, request: ValidationRequest, issued: IssuedCertificate) -> None:
        """successNotification; anything but an acknowledgement means the device must not get it."""
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
            raise UpstreamError(f"the success notification failed: {exc.detail}") from exc
        if not result.succeeded:
            raise UpstreamError(f"Intune answered {result.code} to the success notification")

    def notify_failed(self, request: ValidationRequest, hresult: int, description: str) -> None:
        """failureNotification, through the durable outbox: it is never dropped."""
        self._outbox.enqueue_failure(
            transaction_id=request.transaction_id, csr_der=request.csr_der, hresult=hresult, description=description
        )
