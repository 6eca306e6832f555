"""The answer codes of Intune's ``ScepActions`` (intune-api.md §5) and the exception that carries one."""

from __future__ import annotations

from scep_server.intune.contract import ScepResultCode

# The emulator answers with the same codes the client reads (intune-api.md §5).
Code = ScepResultCode


class Rejection(Exception):
    """A validation step failed: ``code`` is the answer, ``description`` its ``errorDescription``.

    Descriptions never contain the challenge itself; they may name the expected and the received
    subject, SANs or key size, which is what an integrator needs to see.
    """

    def __init__(self, code: Code, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
