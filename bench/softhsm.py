"""The static SQLite row with the CA, RA and OCSP responder keys in a SoftHSM2 token (``ca.keys`` of type
``pkcs11``), beside the file-key SQLite row of the same run.

A fresh token per run (``tests.support.softhsm``: its own ``softhsm2.conf`` and token directory, file
object store); ``scep-server init`` generates the three keys on it, and the server reads the PIN from
``SCEP_PKCS11_PIN``, the backend's default. Everything else is the SQLite row's: same config, same
messages, same checks. The notes give the rate and the server CPU per enrollment as a ratio to the
file-key row (measured here first when this run has none). Without SoftHSM2 the row is skipped with the
reason: a benchmark is not a test, nothing fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bench.context import Bench, say
from bench.enrollment import KeyPlacement, ours_static
from bench.report import Kind, Row, skipped
from tests.support.processes import HarnessError
from tests.support.softhsm import INSTALL_HINT, MODULE_PATHS, SoftHsmToken, softhsm_token

SLUG = "softhsm"
LABEL = "keys in SoftHSM2"
SECTION_LABEL = f"ours, static, SQLite, {LABEL}"
PIN_VARIABLE = "SCEP_PKCS11_PIN"
TOKEN_LABEL = "scep-bench"


def missing() -> str | None:
    """Why SoftHSM2 cannot be used here, or None when it can."""
    if shutil.which("softhsm2-util") is None:
        return INSTALL_HINT
    if not any(Path(path).is_file() for path in MODULE_PATHS):
        return f"{INSTALL_HINT} (no libsofthsm2.so in {', '.join(MODULE_PATHS)})"
    return None


def placement(token: SoftHsmToken) -> KeyPlacement:
    """``ca.keys`` for ``token``, the PIN passed to the server in its environment only."""
    settings = token.settings(pin={"env": PIN_VARIABLE})
    env = {"SOFTHSM2_CONF": os.environ["SOFTHSM2_CONF"], PIN_VARIABLE: token.pin}
    return KeyPlacement(SLUG, LABEL, {"type": "pkcs11", "pkcs11": settings}, env)


def compare(row: Row, baseline: Row) -> None:
    """This row's rate and server CPU per enrollment over the file-key row's, first in the notes."""
    if row.rate and baseline.rate:
        rate = row.rate / baseline.rate
        row.extra["rate_over_file_keys"] = rate
        notes = [f"{rate:.2f}x the file-key row's enroll/s"]
        if row.server_ms and baseline.server_ms:
            cpu = row.server_ms / baseline.server_ms
            row.extra["server_cpu_over_file_keys"] = cpu
            notes.append(f"{cpu:.2f}x its server CPU ms/op")
        row.notes[:0] = notes


def rows(bench: Bench) -> list[Row]:
    reason = missing()
    if reason is not None:
        say(f"{SLUG}: skipped: {reason}")
        raise HarnessError(reason)
    measured: list[Row] = []
    baseline = bench.row("ours-sqlite")
    if baseline is None:
        say(f"{SLUG}: no file-key SQLite row in this run: measuring it first")
        baseline = ours_static(bench, "sqlite")
        measured.append(baseline)
    try:
        row = _measure(bench)
    except Exception as exc:  # the file-key row measured here is kept, as run_sections keeps other sections
        if not measured:
            raise
        reason = str(exc) if isinstance(exc, HarnessError) else f"{type(exc).__name__}: {exc}"
        return [*measured, skipped(f"ours-sqlite-{SLUG}", SECTION_LABEL, Kind.OURS, reason)]
    compare(row, baseline)
    return [*measured, row]


def _measure(bench: Bench) -> Row:
    with tempfile.TemporaryDirectory(dir=bench.root, prefix=f"{SLUG}-") as tmp:
        with softhsm_token(Path(tmp), label=TOKEN_LABEL) as token:
            say(f"{SLUG}: token {token.label!r} of {token.module}")
            return ours_static(bench, "sqlite", placement(token))
