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


# None are open: the findings of the long runs so far are fixed and pinned in test_fuzz_findings.
KNOWN: tuple[KnownFinding, ...] = ()


def is_known(exc: BaseException) -> bool:
    return any(finding.matches(exc) for finding in KNOWN)
