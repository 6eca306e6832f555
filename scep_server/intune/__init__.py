"""Client of Microsoft Intune's third-party CA API (see intune-api.md).

:class:`IntuneClient` holds the API operations (challenge validation, notifications, revocation
requests); :class:`IntuneTransport` does the I/O: MSAL tokens, Graph service discovery and retried
POSTs over one pooled ``requests.Session``.
"""

from __future__ import annotations

from scep_server.intune.client import IntuneClient
from scep_server.intune.messages import (
    NotificationResult,
    RevocationRequest,
    RevocationResult,
    RevocationResultCode,
    ScepResultCode,
    ValidationResult,
    certificate_expiration,
    certificate_serial,
    certificate_thumbprint,
    hresult_value,
)
from scep_server.intune.transport import IntuneTransport

__all__ = [
    "IntuneClient",
    "IntuneTransport",
    "NotificationResult",
    "RevocationRequest",
    "RevocationResult",
    "RevocationResultCode",
    "ScepResultCode",
    "ValidationResult",
    "certificate_expiration",
    "certificate_serial",
    "certificate_thumbprint",
    "hresult_value",
]
