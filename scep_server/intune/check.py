"""What ``scep-server intune check`` and readiness verify of the Intune integration, one named result each.

The check gets both tokens, reads the Intune token's ``roles`` claim (decoded without verification: the
claims are only read, never trusted for anything), discovers the services and judges every discovered URL
with ``intune.allowed_service_hosts`` (intune-api.md §3), reports when the app's credential expires,
and with ``probe`` sends one validateRequest carrying a deliberately invalid CSR: a refusal code proves
the token, the service URL and the API version without a device. A token without the
``scep_challenge_provider`` role is the usual sign of a missing admin consent: Entra ID issues it anyway,
and only Intune refuses it, so it is checked here rather than left to the first enrollment.
When a profile has the device lifecycle sync on, one Graph call to the managed devices and one to the
Entra ID devices prove the app's DeviceManagementManagedDevices.Read.All and Device.Read.All permissions.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt

from scep_server.errors import IntuneError, IntuneProtocolError, ScepServerError
from scep_server.intune.client import PKI_SERVICE, SCEP_SERVICE, IntuneClient
from scep_server.intune.contract import ScepResultCode
from scep_server.intune.credentials import app_credential_kind, certificate_not_after, secret_not_after
from scep_server.intune.graph_devices import ENTRA_PERMISSION, INTUNE_PERMISSION, GraphDevices
from scep_server.intune.transport import IntuneTransport

__all__ = ["INTUNE_ROLE", "PROBE_CSR", "REQUIRED_SERVICES", "CheckResult", "ServiceCheck", "check_app_token",
           "check_device_permissions", "check_services", "role_problem", "run_checks", "token_claims"]

INTUNE_ROLE = "scep_challenge_provider"
REQUIRED_SERVICES = (SCEP_SERVICE, PKI_SERVICE)
# Not a PKCS#10 request at all: Intune can only answer CertificateRequestDecodingFailed (or another refusal).
PROBE_CSR = b"scep-server intune check --probe: this is not a certificate request"
SECONDS_PER_DAY = 86400
PERMISSION_CHECK_WAIT = 10.0  # seconds the permission check waits out Graph's throttling


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One named check: passed or not (or not run, because an earlier one failed), and one line why."""

    name: str
    ok: bool
    detail: str
    skipped: bool = False

    @property
    def failed(self) -> bool:
        return not self.ok and not self.skipped

    def line(self) -> str:
        """``OK    name: detail`` (or ``FAIL``, ``SKIP``), as the CLI prints it."""
        verdict = "SKIP" if self.skipped else "OK" if self.ok else "FAIL"
        return f"{verdict:<5} {self.name}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


# --- the token's claims ---------------------------------------------------------------------------------


def token_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT access token, decoded WITHOUT verification (only to read what it claims)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise IntuneProtocolError("the access token from Entra ID is not a JWT: its roles cannot be read") from None
    if not isinstance(claims, dict):
        raise IntuneProtocolError("the access token's payload is not a JSON object")
    return claims


def role_problem(claims: Mapping[str, Any]) -> str | None:
    """Why the Intune token would be refused for want of the role, or None when it carries it."""
    roles = claims.get("roles")
    if isinstance(roles, list) and INTUNE_ROLE in roles:
        return None
    listed = ", ".join(str(role) for role in roles) if isinstance(roles, list) and roles else "none"
    return (f"the Intune token lacks the {INTUNE_ROLE} role (roles: {listed}): grant the app the Intune "
            f"application permission {INTUNE_ROLE} and admin consent")


def check_app_token(transport: IntuneTransport, *, fresh: bool = True) -> CheckResult:
    """Readiness' check: Entra ID issues the app an Intune token (asked now when ``fresh``) with the role."""
    try:
        problem = role_problem(token_claims(transport.access_token("intune", fresh=fresh)))
    except IntuneError as exc:
        return CheckResult("intune_auth", False, str(exc))
    if problem is not None:
        return CheckResult("intune_auth", False, problem)
    return CheckResult("intune_auth", True, f"Entra ID issued an Intune token with the {INTUNE_ROLE} role")


# --- service discovery -----------------------------------------------------------------------------------


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

    def result(self) -> CheckResult:
        if self.required:
            return CheckResult("discovery", self.usable, self.line())
        return CheckResult("discovery", True, f"{self.line()} (not used)")


def check_services(transport: IntuneTransport) -> list[ServiceCheck]:
    """Get tokens and discover now (raises IntuneError), then judge every service; required ones first."""
    discovered = transport.discover()
    required = {name.lower(): name for name in REQUIRED_SERVICES}
    checks = [_service(transport, name, discovered.get(key), True) for key, name in required.items()]
    checks += [_service(transport, name, uri, False)
               for name, uri in sorted(discovered.items()) if name not in required]
    return checks


def _service(transport: IntuneTransport, name: str, uri: str | None, required: bool) -> ServiceCheck:
    problem = transport.service_problem(uri) if uri is not None else None
    return ServiceCheck(name, uri, problem, required)


# --- the whole check (the CLI) -----------------------------------------------------------------------------


def run_checks(transport: IntuneTransport, *, probe: bool, now: Callable[[], datetime] | None = None,
               device_lifecycle: bool = False) -> Iterator[CheckResult]:
    """Every check in order; a check whose precondition failed is reported skipped. ``device_lifecycle``
    (a profile has the device lifecycle sync on): also the Graph permissions it needs. Raises nothing but
    ConfigError (the configuration cannot be used at all)."""
    graph = _graph_token(transport)
    yield graph
    intune, role = _intune_token(transport)
    yield intune
    yield role
    services = _discovery(transport) if graph.ok else [_skip("discovery", "needs the Graph token")]
    yield from services
    yield _credential_expiry(transport, (now or _utcnow)(), graph.ok)
    if device_lifecycle:
        yield from check_device_permissions(transport) if graph.ok else [
            _skip("graph-devices", "the device lifecycle sync's permissions need the Graph token")]
    if probe:
        ready = role.ok and all(result.ok for result in services)
        yield _probe(transport) if ready else _skip("probe", "needs the Intune token, its role and the services")


def _graph_token(transport: IntuneTransport) -> CheckResult:
    try:
        transport.access_token("graph")
    except IntuneError as exc:
        return CheckResult("graph-token", False, str(exc))
    return CheckResult("graph-token", True, f"Entra ID issued a Graph token for tenant {transport.config.tenant}")


def _intune_token(transport: IntuneTransport) -> tuple[CheckResult, CheckResult]:
    try:
        claims = token_claims(transport.access_token("intune"))
    except IntuneError as exc:
        return CheckResult("intune-token", False, str(exc)), _skip("intune-role", "needs the Intune token")
    token = CheckResult("intune-token", True, "Entra ID issued an Intune token")
    problem = role_problem(claims)
    if problem is not None:
        return token, CheckResult("intune-role", False, problem)
    return token, CheckResult("intune-role", True, f"the Intune token carries the {INTUNE_ROLE} role")


def _discovery(transport: IntuneTransport) -> list[CheckResult]:
    try:
        return [service.result() for service in check_services(transport)]
    except IntuneError as exc:
        return [CheckResult("discovery", False, str(exc))]


def _credential_expiry(transport: IntuneTransport, now: datetime, graph_ok: bool) -> CheckResult:
    """The app credential's expiry: informative, a failure only once it has expired."""
    credential = app_credential_kind(transport.config)
    if credential is None:
        return _skip("app-credential", "no credential configured")
    if credential.kind == "client_secret" and not graph_ok:
        return _skip("app-credential", "the client secret's expiry needs the Graph token")
    try:
        if credential.path is not None:
            not_after = certificate_not_after(credential.path)
        else:
            not_after = secret_not_after(transport)
    except ScepServerError as exc:
        return _skip("app-credential", f"the {credential.kind.replace('_', ' ')}'s expiry is unknown: {exc}")
    days = (not_after - now).total_seconds() / SECONDS_PER_DAY
    what = f"the {credential.kind.replace('_', ' ')} expires {not_after:%Y-%m-%d %H:%M} UTC"
    if days <= 0:
        return CheckResult("app-credential", False, f"{what}: it has expired, renew it in Entra ID")
    return CheckResult("app-credential", True, f"{what} ({days:.1f} days left)")


def _probe(transport: IntuneTransport) -> CheckResult:
    client = IntuneClient(transport.config, transport=transport)
    transaction_id = f"intune-check-{uuid.uuid4().hex}"
    try:
        result = client.validate_request(transaction_id, PROBE_CSR)
    except IntuneError as exc:
        return CheckResult("probe", False, f"validateRequest failed: {exc}")
    answer = f"validateRequest answered {result.code} to a deliberately invalid CSR (activity {result.activity_id})"
    if result.succeeded:
        return CheckResult("probe", False, f"{answer}: Intune must refuse it, so this is not Intune's validation")
    expected = "" if result.code == ScepResultCode.CERTIFICATE_REQUEST_DECODING_FAILED else (
        f"; {ScepResultCode.CERTIFICATE_REQUEST_DECODING_FAILED} was expected, but any refusal proves the path")
    return CheckResult("probe", True, f"{answer}: the token, the service URL and the API work{expected}")


def check_device_permissions(transport: IntuneTransport) -> list[CheckResult]:
    """The device lifecycle sync reads Intune's managed devices and Entra ID's devices: one Graph call to
    each, where 403 means the app lacks that application permission (or its admin consent)."""
    devices = GraphDevices(transport, max_wait=PERMISSION_CHECK_WAIT)
    results = []
    for permission in (INTUNE_PERMISSION, ENTRA_PERMISSION):
        name = f"graph-permission {permission}"
        try:
            results.append(CheckResult(name, True, devices.probe(permission)))
        except IntuneError as exc:
            results.append(CheckResult(name, False, f"{exc} (the device lifecycle sync needs it)"))
    return results


def _skip(name: str, why: str) -> CheckResult:
    return CheckResult(name, False, why, skipped=True)


def _utcnow() -> datetime:
    return datetime.now(UTC)
