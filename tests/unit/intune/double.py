"""A local HTTPS stand-in for Entra ID, Microsoft Graph and Intune, for the Intune client tests.

One Flask app per :class:`CloudDouble` answers:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and ``POST /{tenant}/oauth2/v2.0/token``:
  client credentials with a secret or a PS256 client assertion (checked with PyJWT against the
  registered certificate); counts token requests per scope.
- ``GET /v1.0/servicePrincipals/appId={id}/endpoints``: service discovery from ``services``.
- ``POST /{service}/{path}``: Intune; answers popped from ``script[path]``, else a success.

It is served by werkzeug over TLS with a throw-away CA (:class:`ThrowawayPKI`) in a thread.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import itertools
import socket
import ssl
import threading
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from flask import Flask, Response, jsonify, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from tests.support.pki import CA, KeyType, new_key, private_pem, self_signed

TENANT = "contoso.onmicrosoft.com"
CLIENT_ID = "11111111-2222-3333-4444-555555555555"
INTUNE_APP_ID = "0000000a-0000-0000-c000-000000000000"
SECRET = "s3cret~Value.With-Special_chars"
INTUNE_RESOURCE = "https://api.manage.microsoft.com/"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_KEY = "the double's access-token signing key, 32+ bytes long"


def _validity() -> dict[str, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return {"not_before": now - dt.timedelta(minutes=5), "not_after": now + dt.timedelta(days=2)}


@dataclass
class ThrowawayPKI:
    """A throw-away CA, the TLS certificate of 127.0.0.1 it signs, and an app certificate for Entra ID."""

    directory: Path
    ca_bundle: Path = field(init=False)
    app_certificate: x509.Certificate = field(init=False)
    app_cert_path: Path = field(init=False)
    app_key_path: Path = field(init=False)
    app_encrypted_key_path: Path = field(init=False)
    app_key_password: str = "k3y-pa55word"
    other_bundle: Path = field(init=False)

    def __post_init__(self) -> None:
        ca = CA.root("Intune double test CA", key=new_key(KeyType.P256), usage=None, **_validity())
        self._server_key = new_key(KeyType.P256)
        san: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        server = ca.issue("127.0.0.1", key=self._server_key, sans=san, **_validity()).cert
        self.ca_bundle = self._write("ca.pem", ca.cert_pem())
        self._server_chain = self._write("server.pem", server.public_bytes(serialization.Encoding.PEM))
        self._server_key_path = self._write("server.key", private_pem(self._server_key))
        other = CA.root("Unrelated CA", key=new_key(KeyType.P256), usage=None, **_validity())
        self.other_bundle = self._write("other-ca.pem", other.cert_pem())
        app_key = new_key()
        self.app_certificate = self_signed("scep-server app", app_key, ca=False, **_validity())
        self.app_cert_path = self._write("app.pem", self.app_certificate.public_bytes(serialization.Encoding.PEM))
        self.app_key_path = self._write("app.key", private_pem(app_key))
        self.app_encrypted_key_path = self._write("app-enc.key", private_pem(app_key, self.app_key_password.encode()))

    def _write(self, name: str, data: bytes) -> Path:
        path = self.directory / name
        path.write_bytes(data)
        return path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._server_chain, self._server_key_path)
        return context


class _QuietHandler(WSGIRequestHandler):
    """Keep-alive request handler that registers its connection so ``stop()`` can cut it."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.server.connections.add(self.connection)  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.server.connections.discard(self.connection)  # type: ignore[attr-defined]
        super().finish()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


@dataclass
class Scripted:
    """One scripted answer: status, JSON body (or raw text), headers, and a delay before answering."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    raw: str | None = None


class CloudDouble:
    """Entra ID + Graph + Intune on one HTTPS port; state is inspected by the tests."""

    def __init__(self, pki: ThrowawayPKI, *, mode: str = "secret", issuer: CloudDouble | None = None) -> None:
        self.pki = pki
        self.issuer = issuer  # another double whose tokens this one accepts
        self.mode = mode  # "secret" or "certificate"
        self.token_requests: Counter[str] = Counter()
        self.issued: dict[str, str] = {}  # access token -> scope
        self.token_script: deque[Scripted] = deque()
        self.assertion_headers: list[dict[str, Any]] = []
        self.discovery_requests: list[dict[str, str]] = []
        self.services: dict[str, str] = {}
        self.intune_roles: list[str] = ["scep_challenge_provider"]  # the consented Intune permissions
        self.script: defaultdict[str, deque[Scripted]] = defaultdict(deque)
        self.calls: list[dict[str, Any]] = []
        self.release = threading.Event()
        self._serial = itertools.count(1)
        self._lock = threading.Lock()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.app = self._build_app()

    # --- lifecycle ---

    def start(self) -> CloudDouble:
        server = make_server("127.0.0.1", 0, self.app, threaded=True, request_handler=_QuietHandler,
                             ssl_context=self.pki.server_context())
        server.connections = set()  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"https://127.0.0.1:{self._server.server_port}/"

    def stop(self) -> None:
        """Stop accepting connections and cut the open ones (a service that went away)."""
        self.release.set()
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        for connection in list(self._server.connections):  # type: ignore[attr-defined]
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        assert self._thread is not None
        self._thread.join(5)
        self._server = None

    # --- helpers for tests ---

    def use_intune_at(self, base: str) -> None:
        self.services = {"ScepRequestValidationFEService": f"{base}scep",
                         "PkiConnectorFEService": f"{base}pki/"}

    def revoke_tokens(self) -> None:
        with self._lock:
            self.issued.clear()

    def intune_calls(self, path: str | None = None) -> list[dict[str, Any]]:
        return [c for c in self.calls if path is None or c["path"] == path]

    # --- the app ---

    def _build_app(self) -> Flask:
        app = Flask("intune-double")
        app.add_url_rule(f"/{TENANT}/v2.0/.well-known/openid-configuration", view_func=self._openid)
        app.add_url_rule(f"/{TENANT}/oauth2/v2.0/token", view_func=self._token, methods=["POST"])
        app.add_url_rule("/v1.0/servicePrincipals/appId=<app_id>/endpoints", view_func=self._discovery)
        app.add_url_rule("/<service>/<path:path>", view_func=self._intune, methods=["POST"])
        return app

    def _openid(self) -> Response:
        base = f"{self.url}{TENANT}"
        return jsonify({"issuer": f"{base}/v2.0", "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "token_endpoint": f"{base}/oauth2/v2.0/token"})

    def _token(self) -> Response | tuple[Response, int]:
        form = request.form
        scope = form.get("scope", "")
        with self._lock:
            self.token_requests[scope] += 1
            scripted = self.token_script.popleft() if self.token_script else None
        if scripted is not None:
            return self._scripted(scripted)
        if form.get("client_id") != CLIENT_ID or form.get("grant_type") != "client_credentials":
            return _oauth_error("unauthorized_client", "AADSTS700016: Application not found.")
        refusal = self._check_secret(form) if self.mode == "secret" else self._check_assertion(form)
        if refusal:
            return _oauth_error("invalid_client", refusal)
        token = self._access_token(scope)
        with self._lock:
            self.issued[token] = scope
        return jsonify({"token_type": "Bearer", "expires_in": 3599, "access_token": token})

    def _access_token(self, scope: str) -> str:
        """A JWT as Entra ID issues one (signed with a key of the double's own: only the claims are read)."""
        roles = self.intune_roles if scope == f"{INTUNE_RESOURCE}.default" else ["Application.Read.All"]
        claims: dict[str, Any] = {"aud": scope.removesuffix(".default"), "appid": CLIENT_ID, "jti": next(self._serial)}
        if roles:
            claims["roles"] = list(roles)
        return jwt.encode(claims, TOKEN_KEY, algorithm="HS256")

    @staticmethod
    def _check_secret(form: Any) -> str | None:
        if form.get("client_secret") == SECRET:
            return None
        return ("AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request "
                "is the client secret value, not the client secret ID.\r\nTrace ID: 0f0e\r\nTimestamp: now")

    def _check_assertion(self, form: Any) -> str | None:
        assertion = form.get("client_assertion")
        if not assertion or form.get("client_assertion_type") != JWT_BEARER:
            return "AADSTS7000216: 'client_assertion' is required."
        header = jwt.get_unverified_header(assertion)
        self.assertion_headers.append(header)
        certificate = self.pki.app_certificate
        expected = base64.urlsafe_b64encode(certificate.fingerprint(hashes.SHA256())).decode().rstrip("=")
        if str(header.get("x5t#S256", "")).rstrip("=") != expected or not header.get("x5c"):
            return "AADSTS700027: Client assertion contains an invalid signature (thumbprint)."
        try:
            jwt.decode(assertion, certificate.public_key(), algorithms=["PS256"],  # type: ignore[arg-type]
                       audience=f"{self.url}{TENANT}/oauth2/v2.0/token")
        except jwt.PyJWTError as exc:
            return f"AADSTS700027: Client assertion failed signature validation: {exc}"
        return None

    def _bearer_scope(self) -> str | None:
        auth = request.headers.get("Authorization", "")
        issuer = self.issuer or self
        with issuer._lock:
            return issuer.issued.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None

    def _discovery(self, app_id: str) -> Response | tuple[Response, int]:
        self.discovery_requests.append(dict(request.headers))
        if self._bearer_scope() != f"{self.url}.default":
            return jsonify({"error": {"code": "InvalidAuthenticationToken"}}), 401
        if app_id != INTUNE_APP_ID:
            return jsonify({"value": []})
        return jsonify({"value": [{"providerName": k.upper() if i % 2 else k, "uri": v}
                                  for i, (k, v) in enumerate(self.services.items())]})

    def _intune(self, service: str, path: str) -> Response | tuple[Response, int]:
        with self._lock:
            self.calls.append({"service": service, "path": path, "headers": dict(request.headers),
                               "json": request.get_json(silent=True)})
        if self._bearer_scope() != f"{INTUNE_RESOURCE}.default":
            return jsonify({"error": "invalid token"}), 401
        with self._lock:
            scripted = self.script[path].popleft() if self.script[path] else None
        if scripted is not None:
            return self._scripted(scripted)
        return jsonify(_default_answer(path))

    def _scripted(self, scripted: Scripted) -> Response | tuple[Response, int]:
        if scripted.delay:
            self.release.wait(scripted.delay)
        if scripted.raw is not None:
            response = Response(scripted.raw, status=scripted.status, content_type="application/json")
        else:
            response = jsonify(scripted.body if scripted.body is not None else {})
            response.status_code = scripted.status
        response.headers.update(scripted.headers)
        return response


def _oauth_error(error: str, description: str) -> tuple[Response, int]:
    return jsonify({"error": error, "error_description": description, "error_codes": [7000215]}), 401


def _default_answer(path: str) -> Any:
    if path.startswith("ScepActions/"):
        return {"code": "Success", "errorDescription": ""}
    if path.endswith("downloadRevocationRequests"):
        return {"value": [{"requestContext": "ctx-1", "serialNumber": "0A1B", "issuerName": "CN=Test CA",
                           "caConfiguration": "ca.example\\Test CA"}]}
    return {"value": True}

