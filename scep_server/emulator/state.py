"""The emulator's state and behaviour, without HTTP: Entra ID, Graph discovery and Intune in memory.

One lock guards everything but the devices (``devices``, a ``DeviceDirectory`` with its own lock), so
one ``IntuneEmulator`` can serve several threads and several ``EmulatorServer`` instances (a second
server can stand in for a moved Intune service, intune-api.md §3).
Times come from ``clock`` (unix seconds), so tests can expire tokens and challenges without sleeping.

``validateRequest`` (intune-api.md §5) checks, in order: the CSR decodes; its own signature verifies; it
carries a challengePassword; the challenge opens (see ``challenges``); it has not expired; its device,
user and certificate request ids are UUIDs (BadDeviceIdInChallenge, BadUserIdInChallenge,
BadCertificateRequestIdInChallenge); it is not bound to another transaction; the profile is still
targeted (``untarget``); the CSR matches the profile (see ``csrcheck``). Challenges are single use: the
first passing validation binds the challenge's certificate request id to its transactionId; the same
transactionId may validate again (devices retry), another one gets BadCertificateRequestIdInChallenge,
the code that names the id the challenge was issued for.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from typing import Any

from cryptography import x509

from scep_server.emulator.challenges import ChallengeCodec, check_lifetime
from scep_server.emulator.codes import Code, Rejection
from scep_server.emulator.csrcheck import challenge_password, check_proof_of_possession, compare, load_csr
from scep_server.emulator.devices import DeviceDirectory, device_challenge_spec
from scep_server.emulator.faults import ENDPOINTS, Fault, FaultTable
from scep_server.emulator.revocations import RevocationQueue, RevocationResult
from scep_server.emulator.tokens import (
    GRAPH_ROLES,
    INTUNE_ROLE,
    TOKEN_LIFETIME,
    AccessDenied,
    AppRegistration,
    EntraError,
    TokenSigner,
    access_token_claims,
    authenticate_client,
    scope_resource,
)
from scep_server.intune.contract import ChallengeSpec

INTUNE_APP_ID = "0000000a-0000-0000-c000-000000000000"
SCEP_SERVICE = "ScepRequestValidationFEService"
PKI_SERVICE = "PkiConnectorFEService"
RESOURCE_PATHS = {"graph": "/graph", "intune": "/intune-api"}
_DEFAULT_SERVICES = {"IntuneEnrollmentFEService": "/intune/enrollment", SCEP_SERVICE: "/intune/scep",
                     PKI_SERVICE: "/intune/pki"}


class IntuneEmulator:
    """Entra ID (tokens) + Graph (service discovery) + Intune (SCEP validation, CA revocation), in memory.

    ``tenant`` is a domain or a GUID; ``tenant_id`` is the GUID tokens carry (derived from a domain).
    ``codec`` seals and opens challenges (``codec.seal(..., signing_key=other)`` forges one);
    ``sign_token`` signs arbitrary access-token claims; both exist to test a client's error handling.
    """

    def __init__(self, *, tenant: str = "contoso.onmicrosoft.com", clock: Callable[[], float] = time.time) -> None:
        self.tenant = tenant
        self.tenant_id = tenant.lower() if _is_uuid(tenant) else str(uuid.uuid5(uuid.NAMESPACE_DNS, tenant.lower()))
        self.clock = clock
        self._lock = threading.Lock()
        self._apps: dict[str, AppRegistration] = {}
        self._signer = TokenSigner()
        self.codec = ChallengeCodec()
        self._bindings: dict[str, str] = {}
        self._untargeted: set[str] = set()
        self._validations: list[dict[str, Any]] = []
        self._notifications: list[dict[str, Any]] = []
        self._revocations = RevocationQueue()
        self._services: dict[str, tuple[str, str]] = {}
        self._faults = FaultTable()
        self._counters: Counter[str] = Counter()
        self._origins: set[str] = set()
        self.devices = DeviceDirectory(clock)

    # --- Entra ID (intune-api.md §2) ---

    def register_app(
        self, client_id: str, *, secret: str | None = None, certificate: x509.Certificate | None = None,
        intune_roles: tuple[str, ...] = (INTUNE_ROLE,), graph_roles: tuple[str, ...] = GRAPH_ROLES,
        secret_expires: float | None = None,
    ) -> None:
        """Register (or replace) an app; ``intune_roles`` and ``graph_roles`` are the Intune and Graph
        permissions consented to it and ``secret_expires`` (unix seconds) the secret's end (default: 180
        days from now)."""
        if not client_id or (secret is None and certificate is None):
            raise ValueError("an app needs a client id and a secret or a certificate")
        with self._lock:
            self._apps[client_id] = AppRegistration(client_id, secret, certificate, tuple(intune_roles),
                                                    tuple(graph_roles), created=self.clock(),
                                                    secret_expires=secret_expires)

    def set_intune_roles(self, client_id: str, intune_roles: tuple[str, ...]) -> None:
        """Grant or revoke (``()``) the app's Intune permissions: tokens issued from now on carry these."""
        self._replace_app(client_id, intune_roles=tuple(intune_roles))

    def set_graph_roles(self, client_id: str, graph_roles: tuple[str, ...]) -> None:
        """Grant or revoke (``()``) the app's Graph permissions: tokens issued from now on carry these."""
        self._replace_app(client_id, graph_roles=tuple(graph_roles))

    def _replace_app(self, client_id: str, **changes: Any) -> None:
        with self._lock:
            app = self._apps.get(client_id)
            if app is None:
                raise ValueError(f"no app {client_id!r} is registered")
            self._apps[client_id] = dataclasses.replace(app, **changes)

    def application(self, client_id: str) -> dict[str, Any] | None:
        """The app registration as Graph lists it (None: no such app in this tenant)."""
        with self._lock:
            app = self._apps.get(client_id)
        return None if app is None else app.graph_application(self.tenant_id)

    def knows_tenant(self, tenant: str) -> bool:
        return tenant.lower() in (self.tenant.lower(), self.tenant_id)

    def openid_configuration(self, origin: str) -> dict[str, Any]:
        """The v2.0 OpenID metadata MSAL reads before its first token request."""
        base = f"{origin}/{self.tenant_id}"
        return {
            "issuer": f"{base}/v2.0",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "jwks_uri": f"{origin}/{self.tenant_id}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "tenant_region_scope": "EU",
        }

    def jwks(self) -> dict[str, Any]:
        return self._signer.jwks()

    def request_token(self, form: Mapping[str, str], *, origin: str) -> dict[str, Any]:
        """Answer a client-credentials token request; raises ``EntraError`` as Entra ID would."""
        now = self.clock()
        with self._lock:
            if form.get("grant_type") != "client_credentials":
                raise EntraError(400, "unsupported_grant_type", 70003,
                                 "The app requested an unsupported grant type; the emulator knows client_credentials.")
            app = authenticate_client(self._apps.get(form.get("client_id", "")), form, tenant=self.tenant,
                                      audiences=self._token_endpoints(origin), now=now)
            resource = scope_resource(form.get("scope"), self.tenant).rstrip("/")
            kind = self._resource_kind(resource, origin)
            roles = app.intune_roles if kind == "intune" else app.graph_roles
            claims = access_token_claims(app, audience=resource + "/", roles=roles, issuer=self._issuer(origin),
                                         tenant_id=self.tenant_id, now=now)
            self._counters[f"tokens:{form['scope']}"] += 1
        return {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME, "ext_expires_in": TOKEN_LIFETIME,
                "access_token": self._signer.sign(claims)}

    def sign_token(self, claims: Mapping[str, Any]) -> str:
        """Sign arbitrary access-token claims with the emulator's key (to test token checks)."""
        return self._signer.sign(claims)

    def authorize(
        self, authorization: str | None, *, resource: str, role: str | Collection[str] | None, origin: str
    ) -> dict[str, Any]:
        """The claims of a valid bearer token for ``resource`` ("graph" | "intune") carrying ``role`` (or
        one of several roles; None: any token of the resource).

        Raises ``AccessDenied``: 401 when the token is missing, not ours, expired or for another
        audience or tenant; 403 when the app lacks the role.
        """
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AccessDenied(401, "a bearer token is required")
        claims = self._signer.verify(token.strip())
        with self._lock:
            audiences = self._resource_urls(resource, origin)
        _check_token_claims(claims, audiences=audiences, tenant_id=self.tenant_id, now=self.clock())
        accepted = (role,) if isinstance(role, str) else tuple(role or ())
        roles = claims.get("roles", [])
        if accepted and (not isinstance(roles, list) or not set(accepted) & set(roles)):
            raise AccessDenied(403, f"the application lacks the {' or '.join(accepted)} permission (or admin consent)")
        return claims

    def add_origin(self, origin: str) -> None:
        """Make resources and token endpoints at ``origin`` (``https://host:port``) known to every server."""
        with self._lock:
            self._origins.add(origin.rstrip("/"))

    def _token_endpoints(self, origin: str) -> set[str]:
        return {f"{o}/{t}/oauth2/v2.0/token" for o in self._origins | {origin} for t in (self.tenant, self.tenant_id)}

    def _issuer(self, origin: str) -> str:
        return f"{origin}/{self.tenant_id}/v2.0"

    def _resource_urls(self, kind: str, origin: str) -> set[str]:
        return {o + RESOURCE_PATHS[kind] for o in self._origins | {origin}}

    def _resource_kind(self, resource: str, origin: str) -> str:
        for kind in RESOURCE_PATHS:
            if resource in self._resource_urls(kind, origin):
                return kind
        raise EntraError(400, "invalid_resource", 500011, f"The resource principal named {resource} was not found "
                         f"in the tenant named {self.tenant}.")

    # --- Graph service discovery (intune-api.md §3) ---

    def set_service_uri(self, provider_name: str, uri: str) -> None:
        """Point a discovered service (matched case-insensitively) at ``uri``, or add one."""
        with self._lock:
            self._services[provider_name.lower()] = (provider_name, uri.rstrip("/"))

    def service_endpoints(self, origin: str) -> list[dict[str, Any]]:
        """Intune's service principal endpoints, as Graph lists them."""
        with self._lock:
            services = {name.lower(): (name, origin + path) for name, path in _DEFAULT_SERVICES.items()}
            services.update(self._services)
        return [{"id": str(uuid.uuid5(uuid.NAMESPACE_URL, name)), "deletedDateTime": None, "capability": "",
                 "providerId": INTUNE_APP_ID, "providerName": name, "providerResourceId": None, "uri": uri}
                for name, uri in services.values()]

    # --- Intune SCEP validation (intune-api.md §5) ---

    def mint_challenge(self, spec: ChallengeSpec) -> str:
        """A challenge for a device, as Intune puts it in the SCEP profile (see ``challenges``)."""
        return self.codec.seal(spec, self.clock())

    def mint_device_challenge(self, device: str, spec: ChallengeSpec) -> tuple[str, ChallengeSpec]:
        """A challenge for a device of ``devices`` (by any of its ids): ``spec`` with the device's Intune id
        as its device id and the SAN URI ``IntuneDeviceId://<id>``; returns the challenge and that spec."""
        device_spec = device_challenge_spec(spec, self.devices.intune_device_id(device))
        return self.mint_challenge(device_spec), device_spec

    def untarget(self, certificate_request_id: str) -> None:
        """The profile is unassigned: its challenges now answer ScepProfileNoLongerTargetedToTheClient."""
        with self._lock:
            self._untargeted.add(certificate_request_id)

    def validate(
        self, transaction_id: str, csr_der_b64: str, *, details: Mapping[str, Any] | None = None,
        forced_code: str | None = None,
    ) -> tuple[str, str]:
        """``validateRequest``: (code, errorDescription); every call is recorded in ``validations``."""
        now = self.clock()
        seen: dict[str, Any] = {}
        with self._lock:
            try:
                if forced_code is not None:
                    raise Rejection(Code(forced_code), "injected by the emulator")
                self._check_request(transaction_id, csr_der_b64, now, seen)
                code, description = Code.SUCCESS, ""
            except Rejection as rejection:
                code, description = rejection.code, rejection.description
            self._validations.append({"time": now, "transactionId": transaction_id, "code": str(code),
                                      "errorDescription": description, **seen, **(details or {})})
        return str(code), description

    def _check_request(self, transaction_id: str, csr_der_b64: str, now: float, seen: dict[str, Any]) -> None:
        csr = load_csr(csr_der_b64)
        check_proof_of_possession(csr)
        claims = self.codec.open(challenge_password(csr))
        spec = claims.spec
        seen.update(certificateRequestId=spec.certificate_request_id, deviceId=spec.device_id, userId=spec.user_id)
        check_lifetime(claims, now)
        _check_ids(spec)
        bound = self._bindings.get(spec.certificate_request_id)
        if bound is not None and bound != transaction_id:
            raise Rejection(Code.BAD_CERTIFICATE_REQUEST_ID_IN_CHALLENGE,
                            "the challenge's certificate request was already fulfilled by another transaction")
        if spec.certificate_request_id in self._untargeted:
            raise Rejection(Code.SCEP_PROFILE_NO_LONGER_TARGETED, "the SCEP profile is no longer assigned")
        compare(csr, spec)
        self._bindings[spec.certificate_request_id] = transaction_id

    @property
    def validations(self) -> list[dict[str, Any]]:
        """Every validateRequest: time, transactionId, code, errorDescription, the challenge's ids, headers."""
        with self._lock:
            return [dict(v) for v in self._validations]

    def record_notification(self, kind: str, notification: Mapping[str, Any], *,
                            details: Mapping[str, Any] | None = None) -> None:
        """Record a success or failure notification as received (intune-api.md §5)."""
        transaction_id = notification.get("transactionId")
        with self._lock:
            validated = any(v["transactionId"] == transaction_id and v["code"] == Code.SUCCESS
                            for v in self._validations)
            self._notifications.append({"type": kind, "time": self.clock(), "transactionId": transaction_id,
                                        "validated": validated, "notification": dict(notification),
                                        **(details or {})})

    @property
    def notifications(self) -> list[dict[str, Any]]:
        """Every notification: type ("success" | "failure"), time, transactionId, validated, the body, headers."""
        with self._lock:
            return [dict(n) for n in self._notifications]

    # --- CA revocation requests (intune-api.md §6) ---

    def queue_revocation(self, serial_hex: str, issuer_name: str, ca_configuration: str = "") -> str:
        """An admin revokes a certificate in Intune; returns the request's requestContext."""
        with self._lock:
            return self._revocations.add(serial_hex, issuer_name, ca_configuration)

    def download_revocations(self, max_requests: int, issuer_name: str | None) -> list[dict[str, str]]:
        with self._lock:
            return [r.to_json() for r in self._revocations.download(max_requests, issuer_name)]

    def upload_revocation_results(self, results: list[RevocationResult]) -> bool:
        with self._lock:
            return self._revocations.upload(results, self.clock())

    @property
    def revocation_results(self) -> list[dict[str, Any]]:
        """Every uploaded result, with time, accepted, the request's serialNumber and a reason if refused."""
        with self._lock:
            return [dict(r) for r in self._revocations.results]

    # --- Faults and counters ---

    def inject_fault(
        self, endpoint: str, *, status: int | None = None, latency: float = 0, hang: float | None = None,
        malformed_json: bool = False, auth_failure: bool = False, times: int | None = None,
        code: str | None = None, retry_after: int | None = None, seconds: float | None = None,
    ) -> None:
        """Make ``endpoint`` misbehave for ``times`` calls and/or ``seconds`` (neither: until cleared)."""
        fault = Fault(status=status, latency=latency, hang=hang, malformed_json=malformed_json,
                      auth_failure=auth_failure, code=code, retry_after=retry_after)
        if seconds is not None and (not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0):
            raise ValueError("seconds must be a positive number (or None: until cleared)")
        with self._lock:
            self._faults.set(endpoint, fault, times, until=None if seconds is None else self.clock() + seconds)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return self._faults.snapshot(self.clock())

    def begin_call(self, endpoint: str) -> Fault | None:
        """Count a call of ``endpoint`` and take its fault, if any."""
        with self._lock:
            self._counters[endpoint] += 1
            return self._faults.take(endpoint, self.clock())

    def counters(self) -> dict[str, int]:
        """Calls per endpoint, and ``tokens:<scope>`` per scope a token was issued for."""
        with self._lock:
            return {**dict.fromkeys(ENDPOINTS, 0), **self._counters}


def _check_token_claims(claims: Mapping[str, Any], *, audiences: set[str], tenant_id: str, now: float) -> None:
    audience = claims.get("aud")
    if not isinstance(audience, str) or audience.rstrip("/") not in audiences:
        raise AccessDenied(401, "the token is for another audience")
    if claims.get("tid") != tenant_id:
        raise AccessDenied(401, "the token is for another tenant")
    expires, not_before = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(expires, int | float) or not isinstance(not_before, int | float):
        raise AccessDenied(401, "the token has no valid lifetime")
    if now >= expires:
        raise AccessDenied(401, "the token has expired")
    if not_before > now:
        raise AccessDenied(401, "the token is not valid yet")


def _check_ids(spec: ChallengeSpec) -> None:
    checks = (("device id", spec.device_id, Code.BAD_DEVICE_ID_IN_CHALLENGE),
              ("user id", spec.user_id, Code.BAD_USER_ID_IN_CHALLENGE),
              ("certificate request id", spec.certificate_request_id, Code.BAD_CERTIFICATE_REQUEST_ID_IN_CHALLENGE))
    for name, value, code in checks:
        if not _is_uuid(value):
            raise Rejection(code, f"the challenge's {name} {value!r} is not a GUID")


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
