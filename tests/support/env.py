"""Where the tests run, and what they need from outside the checkout.

A test that needs an outside tool or service (openssl, micromdm's scepclient and scepserver, certmonger,
PostgreSQL, ...) calls :func:`require`, :func:`require_tool` or :func:`require_executables`: without it the
test is skipped on a developer's machine and fails when ``CI`` is set, so CI can never pass by skipping.
This module is the only place in the suite that may skip (tests/unit/test_no_silent_skips.py checks it).
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

_FALSE = ("", "0", "false", "no")
INSTALL_HINT = "install the interop clients with `sudo .ci/install-deps.sh`"


def in_ci() -> bool:
    """True when the ``CI`` environment variable is set to anything but a false value."""
    return os.environ.get("CI", "").strip().lower() not in _FALSE


def unavailable(reason: str) -> NoReturn:
    """Fail the test in CI, skip it elsewhere: ``reason`` says what is missing."""
    if in_ci():
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require(condition: bool, reason: str) -> None:
    """Go on only if ``condition`` holds; otherwise :func:`unavailable`."""
    if not condition:
        unavailable(reason)


def require_tool(name: str) -> str:
    """The path of the command ``name`` on PATH; :func:`unavailable` when there is none."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"needs the {name} command")
    return path


def require_executables(*paths: str) -> None:
    """Every one of ``paths`` must be an executable file; :func:`unavailable` names those that are not."""
    missing = [path for path in paths if not os.access(path, os.X_OK)]
    require(not missing, f"missing {', '.join(missing)}: {INSTALL_HINT}")
