"""When the Entra ID app's credential expires: the certificate file's notAfter, or the client secret's endDateTime.

The secret's expiry is not in the secret: Graph lists it among the app's ``passwordCredentials``
(``GET /applications(appId='{id}')``, readable with the ``Application.Read.All`` permission that service
discovery already needs, intune-api.md §1). Graph never returns a secret's value, only its first three
characters (``hint``); the credential whose hint matches the configured secret is ours. Should several
match, the earliest expiry is reported: a warning too early beats one too late.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cryptography import x509

from scep_server.config.model import IntuneConfig
from scep_server.errors import ConfigError, IntuneProtocolError
from scep_server.intune.transport import IntuneTransport

__all__ = ["AppCredential", "app_credential_kind", "application_url", "certificate_not_after",
           "secret_not_after", "secret_not_after_from"]

HINT_LENGTH = 3  # Graph's passwordCredential.hint: the secret's first characters


@dataclass(frozen=True, slots=True)
class AppCredential:
    """Which credential the app authenticates with: ``client_certificate`` (and its file) or ``client_secret``."""

    kind: str
    path: str | None = None


def app_credential_kind(config: IntuneConfig) -> AppCredential | None:
    """The credential the transport uses (the certificate wins, as in :func:`~.auth.app_credential`)."""
    if not config.configured:
        return None
    if config.client_certificate and config.client_key:
        return AppCredential("client_certificate", config.client_certificate)
    return AppCredential("client_secret") if config.client_secret.resolve() else None


def certificate_not_after(path: str) -> datetime:
    """notAfter of the first certificate of a PEM file; ConfigError when it cannot be read."""
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes()).not_valid_after_utc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{path} is not a PEM certificate") from None


def application_url(config: IntuneConfig) -> str:
    """Graph's URL of the app registration, addressed by its client id."""
    app_id = quote(config.client_id or "", safe="")
    return f"{config.graph_resource_url.rstrip('/')}/v{config.graph_api_version}/applications(appId='{app_id}')"


def secret_not_after(transport: IntuneTransport) -> datetime:
    """The configured client secret's expiry, read from Graph; IntuneError when it cannot be read or found."""
    config = transport.config
    secret = config.client_secret.resolve() or ""
    body = transport.graph_get("application lookup", application_url(config) + "?$select=passwordCredentials")
    return secret_not_after_from(body, secret)


def secret_not_after_from(body: Any, secret: str) -> datetime:
    """The endDateTime of the password credential whose hint begins ``secret`` (see the module doc)."""
    credentials = body.get("passwordCredentials") if isinstance(body, dict) else None
    if not isinstance(credentials, list):
        raise IntuneProtocolError("Graph answered the app lookup without a 'passwordCredentials' list")
    ends = list(_matching_ends(credentials, secret[:HINT_LENGTH]))
    if not ends:
        raise IntuneProtocolError(f"none of the app's {len(credentials)} client secrets in Graph is the "
                                  "configured one (no hint matches)")
    return min(ends)


def _matching_ends(credentials: Iterable[Any], hint: str) -> Iterable[datetime]:
    for credential in credentials:
        if not isinstance(credential, dict) or credential.get("hint") != hint or not hint:
            continue
        yield _timestamp(credential.get("endDateTime"))


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise IntuneProtocolError("a password credential in Graph has no endDateTime")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise IntuneProtocolError(f"a password credential's endDateTime {value[:40]!r} is not ISO 8601") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
