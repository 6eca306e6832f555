"""The vocabulary of Intune's third-party CA API (intune-api.md §5) shared by the client and the emulator.

Both sides speak the same contract; keeping the codes in one place keeps them from drifting apart.
"""

from __future__ import annotations

from enum import StrEnum


class ScepResultCode(StrEnum):
    """The ``code`` of a ScepRequestValidationFEService answer (intune-api.md §5)."""

    SUCCESS = "Success"
    CERTIFICATE_REQUEST_DECODING_FAILED = "CertificateRequestDecodingFailed"
    CHALLENGE_PASSWORD_MISSING = "ChallengePasswordMissing"
    CHALLENGE_DESERIALIZATION_ERROR = "ChallengeDeserializationError"
    CHALLENGE_DECRYPTION_ERROR = "ChallengeDecryptionError"
    CHALLENGE_DECODING_ERROR = "ChallengeDecodingError"
    CHALLENGE_INVALID_TIMESTAMP = "ChallengeInvalidTimestamp"
    CHALLENGE_EXPIRED = "ChallengeExpired"
    SUBJECT_NAME_MISSING = "SubjectNameMissing"
    SUBJECT_NAME_MISMATCH = "SubjectNameMismatch"
    SUBJECT_ALT_NAME_MISSING = "SubjectAltNameMissing"
    SUBJECT_ALT_NAME_MISMATCH = "SubjectAltNameMismatch"
    KEY_USAGE_MISMATCH = "KeyUsageMismatch"
    KEY_LENGTH_MISMATCH = "KeyLengthMismatch"
    ENHANCED_KEY_USAGE_MISSING = "EnhancedKeyUsageMissing"
    ENHANCED_KEY_USAGE_MISMATCH = "EnhancedKeyUsageMismatch"
    AAD_KEY_IDENTIFIER_LIST_MISSING = "AadKeyIdentifierListMissing"
    REGISTERED_KEY_MISMATCH = "RegisteredKeyMismatch"
    SIGNING_CERT_THUMBPRINT_MISMATCH = "SigningCertThumbprintMismatch"
    SCEP_PROFILE_NO_LONGER_TARGETED = "ScepProfileNoLongerTargetedToTheClient"
    SIGNATURE_VALIDATION_FAILED = "SignatureValidationFailed"
    BAD_CERTIFICATE_REQUEST_ID_IN_CHALLENGE = "BadCertificateRequestIdInChallenge"
    BAD_DEVICE_ID_IN_CHALLENGE = "BadDeviceIdInChallenge"
    BAD_USER_ID_IN_CHALLENGE = "BadUserIdInChallenge"
