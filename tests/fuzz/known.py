"""Findings of the fuzz targets that are not fixed yet, each pinned by an xfail test in test_fuzz_findings.

The smoke tests let these through so that they stay green while the fix is pending, and fail on anything
else. When a fix lands, its xfail test passes (and, being strict, fails the run): remove the entry here
together with the xfail marker.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class KnownFinding:
    """An exception type, a fragment of its message, and the project module whose frame raised it."""

    exception: type[Exception]
    message: str
    module: str  # path under scep_server/, e.g. "scep/cms.py"

    def matches(self, exc: BaseException) -> bool:
        return type(exc) is self.exception and self.message in str(exc) and _raised_in(exc) == self.module


def _raised_in(exc: BaseException) -> str | None:
    """The innermost scep_server module in the traceback, relative to the package."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        parts = Path(frame.filename).parts
        if "scep_server" in parts:
            return "/".join(parts[len(parts) - parts[::-1].index("scep_server") :])
    return None


# asn1crypto's REAL, EXTERNAL and ObjectDescriptor have no .native: reading one, or re-encoding one (which
# asn1crypto does through .native for a header ending in 0x80), raises AttributeError, which
# cms.parse_signed lets out (eContent, a signed attribute value, the SET OF signed attributes).
ASN1_REENCODE = KnownFinding(AttributeError, "object has no attribute 'native'", "scep/cms.py")
# str.isdigit() accepts Unicode digits such as '²' that int() refuses: read_envelope lets the ValueError out.
UNICODE_DIGIT_MESSAGE_TYPE = KnownFinding(ValueError, "invalid literal for int()", "scep/message.py")
# A GeneralizedTime without a zone decodes to a naive datetime, compared with an aware one.
NAIVE_SIGNING_TIME = KnownFinding(TypeError, "offset-naive and offset-aware", "scep/message.py")
# cryptography's OCSPResponseBuilder refuses a negative serial number that parse_request accepted.
OCSP_NEGATIVE_SERIAL = KnownFinding(ValueError, "Negative integers are not supported", "ca/ocsp.py")

KNOWN = (ASN1_REENCODE, UNICODE_DIGIT_MESSAGE_TYPE, NAIVE_SIGNING_TIME, OCSP_NEGATIVE_SERIAL)


def is_known(exc: BaseException) -> bool:
    return any(finding.matches(exc) for finding in KNOWN)
