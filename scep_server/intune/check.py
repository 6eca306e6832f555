"""What ``scep-server intune check`` reports: tokens, service discovery, and which URLs would be called.

Graph's discovery answer names the hosts the Intune token and the device CSRs are sent to, so the check
shows every discovered service with the verdict of ``intune.allowed_service_hosts`` on it (intune-api.md §3).
"""

from __future__ import annotations

from dataclasses import dataclass

from scep_server.intune.client import PKI_SERVICE, SCEP_SERVICE
from scep_server.intune.transport import IntuneTransport

__all__ = ["REQUIRED_SERVICES", "ServiceCheck", "check_services"]

REQUIRED_SERVICES = (SCEP_SERVICE, PKI_SERVICE)


@dataclass(frozen=True, slots=True)
class ServiceCheck:
    """One service: its discovered URL (None: not discovered) and why it would be refused (None: usable)."""

    name: str
    uri: str | None
    problem: str | None
    required: bool

    @property
    def usable(self) -> bool:
        return self.uri is not None and self.problem is None

    def line(self) -> str:
        """``name: uri`` with the verdict, as the CLI prints it."""
        if self.uri is None:
            return f"{self.name}: MISSING from Graph discovery (the CA needs it)"
        return f"{self.name}: {self.uri}" + (f"  REFUSED: {self.problem}" if self.problem else "")


def check_services(transport: IntuneTransport) -> list[ServiceCheck]:
    """Get tokens and discover now (raises IntuneError), then judge every service; required ones first."""
    discovered = transport.discover()
    required = {name.lower(): name for name in REQUIRED_SERVICES}
    checks = [_check(transport, name, discovered.get(key), True) for key, name in required.items()]
    checks += [_check(transport, name, uri, False) for name, uri in sorted(discovered.items()) if name not in required]
    return checks


def _check(transport: IntuneTransport, name: str, uri: str | None, required: bool) -> ServiceCheck:
    problem = transport.service_problem(uri) if uri is not None else None
    return ServiceCheck(name, uri, problem, required)
