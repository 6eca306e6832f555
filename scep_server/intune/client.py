"""The Intune third-party CA API: SCEP challenge validation and CA revocation requests.

intune-api.md §5 (ScepRequestValidationFEService) and §6 (PkiConnectorFEService). This module builds
the bodies and reads the answers; tokens, discovery, retries and HTTP statuses are
:class:`~.transport.IntuneTransport`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cryptography import x509

from scep_server.config import IntuneConfig
from scep_server.intune.messages import (
    FailureNotification,
    NotificationResult,
    RevocationRequest,
    RevocationResult,
    SuccessNotification,
    ValidationRequest,
    ValidationResult,
    download_parameters,
    revocation_requests,
    upload_accepted,
    upload_body,
)
from scep_server.intune.transport import IntuneTransport, Reply

__all__ = ["IntuneClient"]

SCEP_SERVICE = "ScepRequestValidationFEService"
SCEP_API_VERSION = "2018-02-20"
PKI_SERVICE = "PkiConnectorFEService"
PKI_API_VERSION = "5019-05-05"


class IntuneClient:
    """Calls Intune for one tenant; thread-safe, one instance per process.

    Raises ``IntuneAuthError`` (credentials, permissions), ``IntuneUnavailable`` (after the retries)
    and ``IntuneProtocolError`` (an answer of the wrong shape). A definite answer that is not
    ``Success`` is a result, not an exception: the caller decides.
    """

    def __init__(self, config: IntuneConfig, *, transport: IntuneTransport | None = None) -> None:
        self._caller_info = config.provider_name_and_version
        self._transport = transport if transport is not None else IntuneTransport(config)

    def validate_request(self, transaction_id: str, csr_der: bytes) -> ValidationResult:
        """Ask Intune whether the CSR's challenge is one it issued for this request (§5 validateRequest)."""
        body = ValidationRequest(transaction_id, csr_der, self._caller_info).to_json()
        reply = self._scep("validateRequest", body)
        return ValidationResult.from_json(reply.body, reply.activity_id)

    def send_success_notification(
        self, *, transaction_id: str, csr_der: bytes, certificate: x509.Certificate,
        issuing_ca: str, ca_configuration: str, certificate_authority: str,
    ) -> NotificationResult:
        """Report the certificate issued for a validated request (§5 successNotification)."""
        body = SuccessNotification(transaction_id, csr_der, certificate, issuing_ca, ca_configuration,
                                   certificate_authority, self._caller_info).to_json()
        reply = self._scep("successNotification", body)
        return NotificationResult.from_json(reply.body, reply.activity_id)

    def send_failure_notification(
        self, *, transaction_id: str, csr_der: bytes, hresult: int, description: str
    ) -> NotificationResult:
        """Report that no certificate was issued (§5 failureNotification).

        ``hresult`` is a 32-bit HRESULT, signed or unsigned; it is sent unsigned (0x80004005 →
        2147500037) as Microsoft's C# library does. ``description`` is cut to 255 characters.
        """
        body = FailureNotification(transaction_id, csr_der, hresult, description, self._caller_info).to_json()
        reply = self._scep("failureNotification", body)
        return NotificationResult.from_json(reply.body, reply.activity_id)

    def download_revocation_requests(
        self, *, max_requests: int = 100, issuer_name: str | None = None
    ) -> list[RevocationRequest]:
        """Fetch up to ``max_requests`` (1-500) certificates Intune wants revoked (§6)."""
        body = download_parameters(max_requests, issuer_name)
        reply = self._pki("downloadRevocationRequests", body)
        return revocation_requests(reply.body)

    def upload_revocation_results(self, results: Sequence[RevocationResult]) -> bool:
        """Report what was done with downloaded revocation requests; False if Intune did not record them (§6)."""
        reply = self._pki("uploadRevocationResults", upload_body(list(results)))
        return upload_accepted(reply.body)

    def close(self) -> None:
        """Close the pooled connections."""
        self._transport.close()

    def _scep(self, action: str, body: dict[str, Any]) -> Reply:
        return self._transport.post(action, SCEP_SERVICE, SCEP_API_VERSION, f"ScepActions/{action}", body)

    def _pki(self, action: str, body: dict[str, Any]) -> Reply:
        path = f"CertificateAuthorityRequests/{action}"
        return self._transport.post(action, PKI_SERVICE, PKI_API_VERSION, path, body)
