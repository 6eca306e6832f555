"""The one exception tree of scep-server.

::

    ScepServerError
     ├─ ConfigError              invalid or missing configuration (CLI exits non-zero)
     ├─ CAError                  CA material missing, unreadable or inconsistent
     ├─ StoreError               the database failed (a bug, a constraint, the schema): 503, logged
     ├─ IntuneError              a call to Entra ID / Graph / Intune failed (.activity_id, .status)
     │   ├─ IntuneAuthError      Entra ID refused the app's credentials (secret, certificate, consent)
     │   └─ IntuneProtocolError  an answer we cannot use: unexpected status, malformed JSON
     ├─ Unavailable              the one transient branch (.retry_after): PENDING or 503 + Retry-After
     │   ├─ StoreUnavailable     lock timeout, lost connection (also a StoreError)
     │   ├─ IntuneUnavailable    transport error, timeout, 429 or 5xx after the retries (also an IntuneError)
     │   └─ ValidatorUnavailable a challenge validator could not decide now
     ├─ NotFound                 what was asked for does not exist: 404 in the API, never an outage
     │   └─ CertificateNotFound
     ├─ Conflict                 the state does not allow it (any more): 409 in the API, never an outage
     │   ├─ AlreadyRevoked  DuplicateCertificate  TransactionNotPending  OutboxEntryNotPending
     │   └─ TransactionExists
     ├─ InvalidInput             an operator's argument is not acceptable: 400 in the API, exit 2 in the CLI
     │   └─ UnknownRevocationReason
     ├─ ScepClientError          the client side: a SCEP server's answer we cannot use (scep/client/)
     │   └─ ScepHttpError        the HTTP exchange failed (simulator/http.py)
     ├─ MalformedOcspRequest     an OCSP request we cannot read: answered malformedRequest (ca/ocsp.py)
     ├─ WebhookSignatureError    a webhook delivery its receiver must not trust (challenge/webhook_signature.py)
     │   ├─ MissingWebhookHeader  MalformedWebhookHeader  StaleWebhookTimestamp
     │   └─ WebhookSignatureMismatch  ReplayedWebhookDelivery
     └─ ScepError
         ├─ RequestError         → HTTP 400, no CertRep possible (unknown operation, undecodable message)
         │   └─ PayloadTooLarge  → HTTP 413
         └─ PKIFailure           → HTTP 200 + signed CertRep FAILURE carrying .fail_info
             ├─ BadAlg            failInfo 0
             ├─ BadMessageCheck   failInfo 1
             │   └─ EnvelopeRejected  any failure after the RSA step: one answer, no oracle
             ├─ BadRequest        failInfo 2
             │   ├─ ChallengeRejected  carries the validator's reason (an Intune code, say)
             │   └─ RetryLater         could not be decided or delivered now; a retry may succeed
             ├─ BadTime           failInfo 3
             └─ BadCertId         failInfo 4

The classes of a branch may live next to the code that raises them (the store's records, the OCSP
parser); the branches live here, and every exception class of the server is drawn above (a test checks).

A ``PKIFailure`` can only be answered with a CertRep when the request's envelope was readable enough
to know the transactionID, the sender nonce and the signer; the web layer falls back to HTTP 400 when
it was not. Exceptions carry their data as attributes; messages never contain secrets.

What a device is told is not the ``detail`` of a ``PKIFailure`` (that goes to the server's log and the
audit table) but its ``public_text``: one line of a small fixed vocabulary per failInfo and reason class,
so upstream answers, serial numbers of withdrawn certificates and the exact policy rule stay inside.
"""

from __future__ import annotations

from enum import IntEnum


class FailInfo(IntEnum):
    """SCEP failInfo values (RFC 8894 §3.2.1.4.5)."""

    BAD_ALG = 0
    BAD_MESSAGE_CHECK = 1
    BAD_REQUEST = 2
    BAD_TIME = 3
    BAD_CERT_ID = 4


class ScepServerError(Exception):
    """Base of every error raised on purpose by scep-server."""


class ConfigError(ScepServerError):
    """The configuration is invalid or incomplete."""


class CAError(ScepServerError):
    """CA or RA material is missing, unreadable or inconsistent."""


class StoreError(ScepServerError):
    """The certificate store failed."""


class Unavailable(ScepServerError):
    """A dependency failed in a way that may go away on retry; ``retry_after`` in seconds when known."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class StoreUnavailable(StoreError, Unavailable):
    """The store failed in a way that may go away on retry (lock timeout, lost connection)."""

    def __init__(self, detail: str, retry_after: float | None = None) -> None:
        Unavailable.__init__(self, detail, retry_after)


class ValidatorUnavailable(Unavailable):
    """A challenge validator could not decide now; the request may succeed later."""


class NotFound(ScepServerError):
    """What was asked for does not exist (404 in the API); never an outage."""


class Conflict(ScepServerError):
    """The current state does not allow the change (409 in the API); never an outage."""


class InvalidInput(ScepServerError):
    """An operator's argument (admin API, CLI) is not acceptable (400 in the API)."""


class IntuneError(ScepServerError):
    """A call to Entra ID, Graph or Intune failed."""

    def __init__(self, detail: str, *, activity_id: str | None = None, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.activity_id = activity_id
        self.status = status


class IntuneAuthError(IntuneError):
    """Entra ID refused the app's credentials; not transient, an admin must act."""


class IntuneUnavailable(IntuneError, Unavailable):
    """Intune could not be reached or answered 429/5xx even after the retries."""

    def __init__(
        self, detail: str, *, activity_id: str | None = None, status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        IntuneError.__init__(self, detail, activity_id=activity_id, status=status)
        self.retry_after = retry_after


class IntuneProtocolError(IntuneError):
    """Intune answered something we cannot use (unexpected status, malformed body)."""


class ScepError(ScepServerError):
    """An error in handling one SCEP request."""


class RequestError(ScepError):
    """The HTTP request cannot be answered with a CertRep (HTTP 400)."""

    status_code = 400


class PayloadTooLarge(RequestError):
    """The request body exceeds the configured limit (HTTP 413)."""

    status_code = 413


class PKIFailure(ScepError):
    """Answered with a signed CertRep whose pkiStatus is FAILURE.

    ``detail`` is for operators only; the CertRep's failInfoText is ``public_text``, fixed per class.
    """

    fail_info: FailInfo = FailInfo.BAD_REQUEST
    public_text: str = "request refused"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def failure_for(fail_info: FailInfo, detail: str) -> PKIFailure:
    """The PKIFailure subclass for a failInfo value (to replay a stored failure)."""
    classes: dict[FailInfo, type[PKIFailure]] = {
        FailInfo.BAD_ALG: BadAlg,
        FailInfo.BAD_MESSAGE_CHECK: BadMessageCheck,
        FailInfo.BAD_REQUEST: BadRequest,
        FailInfo.BAD_TIME: BadTime,
        FailInfo.BAD_CERT_ID: BadCertId,
    }
    return classes[fail_info](detail)


class BadAlg(PKIFailure):
    fail_info = FailInfo.BAD_ALG
    public_text = "algorithm not accepted"


class BadMessageCheck(PKIFailure):
    fail_info = FailInfo.BAD_MESSAGE_CHECK
    public_text = "message check failed"


class BadRequest(PKIFailure):
    fail_info = FailInfo.BAD_REQUEST


class ChallengeRejected(BadRequest):
    """The challenge validator refused the request; ``reason`` is its code (e.g. an Intune code)."""

    public_text = "challenge not accepted"
    # Reasons that say nothing about the device's challenge: the server could not ask (its credentials
    # or Intune's answer were unusable). The device is told that much, and no more.
    SERVER_SIDE_REASONS = frozenset({"EntraIdAuthenticationFailed", "IntuneProtocolError"})

    def __init__(self, detail: str, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason
        if reason in self.SERVER_SIDE_REASONS:
            self.public_text = "the challenge could not be validated (server configuration)"


class RetryLater(BadRequest):
    """The request could not be decided or its certificate not delivered now (a dependency failed or
    did not acknowledge); the transaction is failed, so a retry with the same transactionID starts afresh."""

    public_text = "temporarily unable to issue; retry later"


class BadTime(PKIFailure):
    fail_info = FailInfo.BAD_TIME
    public_text = "message time not accepted"


class BadCertId(PKIFailure):
    fail_info = FailInfo.BAD_CERT_ID
    public_text = "no matching certificate or transaction"

