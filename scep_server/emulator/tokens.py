"""Entra ID's half: app registrations, client authentication, and the access tokens it signs (intune-api.md §2).

Client credentials are checked the way Entra ID does for the v2 token endpoint: a ``client_secret``, or a
``client_assertion`` JWT (RFC 7523) signed with the key of the certificate registered on the app, found
by its ``x5t#S256`` (MSAL's PS256 form) or ``x5t`` (the RS256 form) header; ``aud`` must be the token
endpoint, ``iss`` and ``sub`` the client id, and the assertion must be within its lifetime.

Error answers carry Entra's shape (``error``, ``error_description`` starting ``AADSTS<n>:``,
``error_codes``). Codes Microsoft documents are used as documented (7000215 wrong secret, 700016 unknown
app, 700027 bad assertion signature or unregistered certificate, 700024 assertion out of its time range,
7000218 no credential, 1002012 scope without ``/.default``, 500011 unknown resource, 90002 unknown
tenant); for a malformed assertion or one with the wrong audience we answer 50027 (invalid JWT).

Access tokens are RS256 JWTs signed by the emulator's key (its JWKS is published like Entra's). ``aud`` is
the resource of the requested scope (``/.default`` removed, one trailing slash); resource servers compare
it with trailing slashes stripped.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm
from jwt.types import Options

INTUNE_ROLE = "scep_challenge_provider"
APPLICATION_READ_ROLE = "Application.Read.All"
MANAGED_DEVICES_READ_ROLE = "DeviceManagementManagedDevices.Read.All"
DEVICE_READ_ROLE = "Device.Read.All"
GRAPH_ROLES = (APPLICATION_READ_ROLE, MANAGED_DEVICES_READ_ROLE, DEVICE_READ_ROLE)
TOKEN_LIFETIME = 3600
SECRET_LIFETIME = 180 * 86400  # what Entra ID's portal proposes for a new client secret
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LEEWAY = 300  # Entra ID tolerates five minutes of clock skew
_ASSERTION_ALGORITHMS = ("PS256", "RS256")
_UNVERIFIED: Options = {"verify_signature": True, "verify_aud": False, "verify_exp": False, "verify_nbf": False,
               "verify_iat": False, "verify_iss": False, "verify_sub": False, "verify_jti": False}


@dataclass(frozen=True, slots=True)
class AppRegistration:
    """An Entra ID app: its credentials, the Intune and Graph application permissions consented to it,
    and when (unix seconds) it was registered and its secret expires."""

    client_id: str
    secret: str | None = None
    certificate: x509.Certificate | None = None
    intune_roles: tuple[str, ...] = (INTUNE_ROLE,)
    graph_roles: tuple[str, ...] = GRAPH_ROLES
    created: float = 0.0
    secret_expires: float | None = None

    def graph_application(self, tenant_id: str) -> dict[str, Any]:
        """The app registration as Graph's ``applications(appId=...)`` shows it: never a secret's value,
        only its first three characters (``hint``) and its dates."""
        object_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant_id}/{self.client_id}/application"))
        passwords = []
        if self.secret is not None:
            end = self.secret_expires if self.secret_expires is not None else self.created + SECRET_LIFETIME
            passwords.append({"customKeyIdentifier": None, "displayName": "scep-server", "hint": self.secret[:3],
                              "keyId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{object_id}/secret")),
                              "secretText": None, "startDateTime": _graph_time(self.created),
                              "endDateTime": _graph_time(end)})
        keys = []
        if self.certificate is not None:
            keys.append({"customKeyIdentifier": self.certificate.fingerprint(hashes.SHA1()).hex().upper(),
                         "displayName": self.certificate.subject.rfc4514_string(),
                         "keyId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{object_id}/certificate")),
                         "type": "AsymmetricX509Cert", "usage": "Verify", "key": None,
                         "startDateTime": _graph_time(self.certificate.not_valid_before_utc.timestamp()),
                         "endDateTime": _graph_time(self.certificate.not_valid_after_utc.timestamp())})
        return {"id": object_id, "appId": self.client_id, "displayName": "scep-server",
                "passwordCredentials": passwords, "keyCredentials": keys}


def _graph_time(unix: float) -> str:
    """Graph's timestamps: ISO 8601 UTC with a ``Z``."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EntraError(Exception):
    """An Entra ID error answer: HTTP status, OAuth ``error``, AADSTS number and description."""

    def __init__(self, status: int, error: str, aadsts: int, description: str) -> None:
        super().__init__(f"AADSTS{aadsts}: {description}")
        self.status = status
        self.error = error
        self.aadsts = aadsts
        self.description = description

    def body(self, now: float) -> dict[str, Any]:
        trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        return {
            "error": self.error,
            "error_description": f"AADSTS{self.aadsts}: {self.description} Trace ID: {trace} "
                                 f"Correlation ID: {correlation} Timestamp: {stamp}",
            "error_codes": [self.aadsts],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
        }


class AccessDenied(Exception):
    """A resource refused the bearer token: 401 (missing, invalid, expired, wrong audience) or 403 (role)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def scope_resource(scope: str | None, tenant: str) -> str:
    """The resource a client-credentials ``scope`` names, without ``/.default`` (AADSTS1002012 otherwise)."""
    scopes = (scope or "").split()
    if len(scopes) != 1 or not scopes[0].endswith("/.default") or scopes[0] == "/.default":
        raise EntraError(400, "invalid_scope", 1002012, f"The provided value for scope {scope or ''} is not valid. "
                         "Client credential flows must have a scope value with /.default suffixed to the "
                         "resource identifier (application ID URI).")
    return scopes[0][: -len("/.default")]


def authenticate_client(
    app: AppRegistration | None, form: Mapping[str, str], *, tenant: str, audiences: Collection[str], now: float
) -> AppRegistration:
    """The app the request authenticates as, or ``EntraError`` the way Entra ID answers."""
    client_id = form.get("client_id", "")
    if not client_id:
        raise EntraError(400, "invalid_request", 900144,
                         "The request body must contain the following parameter: 'client_id'.")
    if app is None:
        raise EntraError(400, "unauthorized_client", 700016,
                         f"Application with identifier '{client_id}' was not found in the directory '{tenant}'.")
    if form.get("client_secret"):
        _check_secret(app, form["client_secret"])
    elif form.get("client_assertion"):
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise EntraError(400, "invalid_request", 50027, f"client_assertion_type must be '{ASSERTION_TYPE}'.")
        _check_assertion(app, form["client_assertion"], audiences=audiences, now=now)
    else:
        raise EntraError(401, "invalid_client", 7000218, "The request body must contain the following parameter: "
                         "'client_assertion' or 'client_secret'.")
    return app


def _check_secret(app: AppRegistration, secret: str) -> None:
    if app.secret is None or not hmac.compare_digest(app.secret.encode(), secret.encode()):
        raise EntraError(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret being "
                         "sent in the request is the client secret value, not the client secret ID, for a secret "
                         f"added to app '{app.client_id}'.")


def _check_assertion(app: AppRegistration, assertion: str, *, audiences: Collection[str], now: float) -> None:
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.InvalidTokenError:
        raise EntraError(401, "invalid_client", 50027, "Invalid JWT token. The token is malformed.") from None
    certificate = app.certificate
    if certificate is None or not _names_certificate(header, certificate):
        raise EntraError(401, "invalid_client", 700027, "The certificate with identifier used to sign the client "
                         f"assertion is not registered on application '{app.client_id}'.")
    claims = _verified_claims(assertion, certificate, str(header.get("alg")))
    _check_assertion_claims(claims, app.client_id, audiences=audiences, now=now)


def _names_certificate(header: Mapping[str, Any], certificate: x509.Certificate) -> bool:
    der = certificate.public_bytes(Encoding.DER)
    if "x5t#S256" in header:
        return _same_thumbprint(header["x5t#S256"], hashlib.sha256(der).digest())
    return "x5t" in header and _same_thumbprint(header["x5t"], hashlib.sha1(der).digest())


def _same_thumbprint(encoded: object, digest: bytes) -> bool:
    expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return isinstance(encoded, str) and hmac.compare_digest(encoded.rstrip("="), expected)


def _verified_claims(assertion: str, certificate: x509.Certificate, algorithm: str) -> dict[str, Any]:
    key = certificate.public_key()
    if algorithm not in _ASSERTION_ALGORITHMS or not isinstance(key, rsa.RSAPublicKey):
        raise EntraError(401, "invalid_client", 700027, f"Client assertion uses an unsupported algorithm {algorithm}.")
    try:
        claims: dict[str, Any] = jwt.decode(assertion, key, algorithms=[algorithm],
                                            options=_UNVERIFIED)
    except jwt.InvalidSignatureError:
        raise EntraError(401, "invalid_client", 700027, "Client assertion contains an invalid signature.") from None
    except jwt.InvalidTokenError:
        raise EntraError(401, "invalid_client", 50027, "Invalid JWT token. The token is malformed.") from None
    return claims


def _check_assertion_claims(
    claims: Mapping[str, Any], client_id: str, *, audiences: Collection[str], now: float
) -> None:
    audience = claims.get("aud")
    if not isinstance(audience, str) or audience not in audiences:
        raise EntraError(401, "invalid_client", 50027, "Invalid JWT token. The client assertion's audience must "
                         "be the token endpoint.")
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise EntraError(401, "invalid_client", 700021, "Client assertion application identifier doesn't match "
                         "'client_id' parameter.")
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
    if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
        raise EntraError(401, "invalid_client", 50027, "Invalid JWT token. The client assertion has no valid 'exp'.")
    if now > exp + ASSERTION_LEEWAY or nbf > now + ASSERTION_LEEWAY:
        raise EntraError(401, "invalid_client", 700024, "Client assertion is not within its valid time range.")


class TokenSigner:
    """Signs and verifies the emulator's RS256 access tokens; publishes the key as a JWKS."""

    def __init__(self, key: rsa.RSAPrivateKey | None = None) -> None:
        self._key = key if key is not None else rsa.generate_private_key(public_exponent=65537, key_size=2048)
        spki = self._key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(spki).digest()[:15]).decode()

    def sign(self, claims: Mapping[str, Any]) -> str:
        return jwt.encode(dict(claims), self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token this signer made; ``AccessDenied(401)`` for anything else."""
        try:
            if jwt.get_unverified_header(token).get("kid") != self.kid:
                raise AccessDenied(401, "the token is not signed by a key of this tenant")
            claims: dict[str, Any] = jwt.decode(token, self._key.public_key(), algorithms=["RS256"],
                                                options=_UNVERIFIED)
        except jwt.InvalidTokenError:
            raise AccessDenied(401, "the token's signature is invalid or the token is malformed") from None
        return claims

    def jwks(self) -> dict[str, Any]:
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self._key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}


def access_token_claims(
    app: AppRegistration, *, audience: str, roles: tuple[str, ...], issuer: str, tenant_id: str, now: float
) -> dict[str, Any]:
    """An app-only access token's claims, as Entra ID issues them for the client-credentials grant."""
    issued = int(now)
    object_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{tenant_id}/{app.client_id}"))
    claims: dict[str, Any] = {
        "aud": audience, "iss": issuer, "iat": issued, "nbf": issued, "exp": issued + TOKEN_LIFETIME,
        "tid": tenant_id, "appid": app.client_id, "azp": app.client_id, "oid": object_id, "sub": object_id,
        "idtyp": "app", "uti": uuid.uuid4().hex, "ver": "2.0",
    }
    if roles:
        claims["roles"] = list(roles)
    return claims
