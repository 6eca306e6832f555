"""How one PKIOperation was answered: the CertRep, and the status the audit table and the metrics record."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from scep_server.errors import FailInfo

__all__ = ["OperationStatus", "Outcome"]


class OperationStatus(StrEnum):
    """How a PKIOperation was answered, as the audit table and the metrics label record it."""

    SUCCESS = "SUCCESS"
    PENDING = "PENDING"
    FAILURE_BAD_ALG = "FAILURE:BAD_ALG"
    FAILURE_BAD_MESSAGE_CHECK = "FAILURE:BAD_MESSAGE_CHECK"
    FAILURE_BAD_REQUEST = "FAILURE:BAD_REQUEST"
    FAILURE_BAD_TIME = "FAILURE:BAD_TIME"
    FAILURE_BAD_CERT_ID = "FAILURE:BAD_CERT_ID"

    @classmethod
    def failure(cls, fail_info: FailInfo) -> OperationStatus:
        return cls(f"FAILURE:{fail_info.name}")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one PKIOperation (for the audit log and metrics)."""

    reply: bytes
    status: OperationStatus
    detail: str | None = None
    message_type: str = "unknown"
    issued: bool = False
    audited: bool = False  # its audit record was stored with the enrollment
