"""Fresh SoftHSM2 tokens for the tests of the ``pkcs11`` key backend.

Each token lives in a directory of its own: a private ``softhsm2.conf`` (``SOFTHSM2_CONF``) points at a
private token directory, and ``softhsm2-util --init-token --free`` initialises one token there with
the label and PINs asked for. SoftHSM reads its configuration when the module is initialised, so every
PKCS#11 session of the process is closed first and the module comes up again on the next use. Without
SoftHSM2 (Debian's ``softhsm2``) the test is :func:`~tests.support.env.unavailable`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from scep_server.ca.keys.pkcs11 import close_sessions
from tests.support.env import unavailable

MODULE_PATHS = ("/usr/lib/softhsm/libsofthsm2.so", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")
INSTALL_HINT = "needs SoftHSM2: apt-get install softhsm2"
USER_PIN, SO_PIN = "123456", "87654321"


@dataclass(frozen=True, slots=True)
class SoftHsmToken:
    """An initialised token: its module, label and PINs."""

    module: str
    label: str
    pin: str = field(default=USER_PIN, repr=False)
    so_pin: str = field(default=SO_PIN, repr=False)

    def settings(self, **overrides: object) -> dict[str, object]:
        """The ``pkcs11`` backend's settings for this token, PIN inline; ``overrides`` replace keys."""
        return {"module": self.module, "token_label": self.label, "pin": {"value": self.pin}, **overrides}


def softhsm_module() -> str:
    """The SoftHSM2 PKCS#11 module; :func:`unavailable` without SoftHSM2."""
    if shutil.which("softhsm2-util") is None:
        unavailable(INSTALL_HINT)
    found = next((path for path in MODULE_PATHS if Path(path).is_file()), None) or _module_from_dpkg()
    if found is None:
        unavailable(f"{INSTALL_HINT} (libsofthsm2.so not found)")
    return found


def _module_from_dpkg() -> str | None:
    for package in ("softhsm2", "libsofthsm2"):
        listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False).stdout
        for line in listing.splitlines():
            if line.endswith("/libsofthsm2.so") and Path(line).is_file():
                return line
    return None


@contextmanager
def softhsm_token(directory: Path, label: str = "scep-test") -> Iterator[SoftHsmToken]:
    """A new token in ``directory``, the process's PKCS#11 module pointed at it while the block runs."""
    module = softhsm_module()
    tokens = directory / "tokens"
    tokens.mkdir(parents=True)
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    previous = os.environ.get("SOFTHSM2_CONF")
    close_sessions()
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        token = SoftHsmToken(module, label)
        _init_token(token)
        yield token
    finally:
        close_sessions()
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


def _init_token(token: SoftHsmToken) -> None:
    command = ["softhsm2-util", "--init-token", "--free", "--label", token.label,
               "--pin", token.pin, "--so-pin", token.so_pin]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"softhsm2-util --init-token failed: {result.stdout}{result.stderr}")
