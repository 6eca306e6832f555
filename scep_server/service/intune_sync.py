"""Carry out the revocations Intune queues (intune-api.md §6) and report the results.

One sync: download up to ``batch_size`` requests, record each by its requestContext (so a request seen
again is never revoked twice), revoke the certificates that need it, then upload every result Intune
has not acknowledged yet — including results of earlier syncs whose upload failed. Result codes:
0 revoked; 4002 a serial that is not hexadecimal; 4004 a certificate we never issued; 4005 already
revoked; 4101 our store failed (retryable: Intune sends the request again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from scep_server import metrics
from scep_server.errors import Conflict, IntuneError, NotFound, StoreError
from scep_server.intune.client import IntuneClient
from scep_server.intune.messages import RevocationRequest, RevocationResult, RevocationResultCode
from scep_server.pki.reasons import CRLReason
from scep_server.service.revocation import RevocationService
from scep_server.store import AlreadyRevoked, CertificateNotFound, IntuneRevocationRecord, Store, parse_serial_hex

log = logging.getLogger("scep_server.service.intune_sync")

# Intune revokes when a device is retired or wiped, or the profile no longer applies to it.
INTUNE_REVOCATION_REASON = CRLReason.CESSATION_OF_OPERATION


@dataclass(frozen=True, slots=True)
class SyncReport:
    downloaded: int
    revoked: int
    uploaded: int
    upload_acknowledged: bool


class RevocationSync:
    """Downloads Intune's revocation requests, revokes, and uploads the results."""

    def __init__(
        self, store: Store, client: IntuneClient, revoker: RevocationService, *,
        batch_size: int = 100, issuer_filter: str | None = None,
    ) -> None:
        self._store = store
        self._client = client
        self._revoker = revoker
        self._batch_size = batch_size
        self._issuer_filter = issuer_filter

    def run_once(self) -> SyncReport:
        """One download → revoke → upload round. IntuneError escapes when Intune cannot be asked."""
        requests = self._client.download_revocation_requests(
            max_requests=self._batch_size, issuer_name=self._issuer_filter
        )
        revoked = sum(self._handle(request) for request in requests)
        uploaded, acknowledged = self._upload()
        report = SyncReport(len(requests), revoked, uploaded, acknowledged)
        if requests or uploaded:
            log.info("Intune revocations: downloaded=%d revoked=%d uploaded=%d acknowledged=%s",
                     report.downloaded, report.revoked, report.uploaded, report.upload_acknowledged)
        return report

    def run_safely(self) -> SyncReport | None:
        """One round, None when it failed (it is tried again later).

        Rounds must not overlap across processes: callers run this under the round lock
        (``scep_server.jobs.tasks.RevocationRounds``), so a request is never processed, or its result
        uploaded, by two processes at once.
        """
        try:
            report = self.run_once()
        except (IntuneError, StoreError, Conflict, NotFound) as exc:
            log.warning("Intune revocation sync failed, will retry: %s", exc)
            return None
        metrics.INTUNE_REVOCATION_SYNC_LAST_SUCCESS.set_to_current_time()
        return report

    def _handle(self, request: RevocationRequest) -> int:
        record = self._store.record_revocation_request(
            request_context=request.request_context, serial_number=request.serial_number,
            issuer_name=request.issuer_name, ca_configuration=request.ca_configuration,
        )
        if not record.needs_processing:
            return 0  # decided before; its result is (re)uploaded below
        code, message = self._revoke(record)
        self._store.set_revocation_result(record.request_context, code=int(code), message=message)
        return 1 if code is RevocationResultCode.NONE else 0

    def _revoke(self, record: IntuneRevocationRecord) -> tuple[RevocationResultCode, str]:
        try:
            serial = parse_serial_hex(record.serial_number)
        except ValueError:
            invalid = f"serial {record.serial_number!r} is not a hexadecimal serial number"
            return RevocationResultCode.PARAMETER_DATA_INVALID_ERROR, invalid
        try:
            self._revoker.revoke(serial, reason=INTUNE_REVOCATION_REASON, actor=f"intune:{record.request_context}",
                                 source="intune-sync")
        except CertificateNotFound:
            return RevocationResultCode.CERTIFICATE_NOT_FOUND_ERROR, f"no certificate with serial {serial:x}"
        except AlreadyRevoked:
            return RevocationResultCode.CONFLICT_ERROR, f"certificate {serial:x} is already revoked"
        except StoreError as exc:
            return RevocationResultCode.SERVICE_UNAVAILABLE_EXCEPTION, f"store unavailable: {exc}"
        log.info("revoked serial=%x for Intune request %s", serial, record.request_context)
        return RevocationResultCode.NONE, ""

    def _upload(self) -> tuple[int, bool]:
        pending = self._store.revocation_results_to_upload(limit=500)
        if not pending:
            return 0, True
        results = [_result(record) for record in pending]
        acknowledged = self._client.upload_revocation_results(results)
        if acknowledged:
            self._store.mark_revocation_results_uploaded(
                [record.request_context for record in pending], at=datetime.now(UTC)
            )
        else:
            log.warning("Intune did not acknowledge %d revocation results; they will be sent again", len(results))
        return len(results), acknowledged


def _result(record: IntuneRevocationRecord) -> RevocationResult:
    code = int(record.result_code or 0)
    return RevocationResult(
        request_context=record.request_context, succeeded=code == 0, error_code=code,
        error_message=record.result_message or "",
    )
