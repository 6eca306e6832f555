"""The Entra ID app: its credentials and the client-credential tokens MSAL gets with them (intune-api.md §2).

The app authenticates with a client secret, or with a certificate and its private key (MSAL then signs a
PS256 client assertion). Both are read and checked when the transport is built, so a bad path or
password is a :class:`~scep_server.errors.ConfigError` at startup rather than a failed enrollment.
Token requests go over the transport's session; turning their failures into errors is the transport's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from scep_server.config.model import IntuneConfig
from scep_server.errors import ConfigError, IntuneAuthError

__all__ = ["MICROSOFT_LOGIN_HOSTS", "AppTokens", "app_credential", "normalise_scope", "secret_strings"]

MICROSOFT_LOGIN_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "login.microsoftonline.de",
    }
)


def normalise_scope(resource_url: str) -> str:
    """``{resource}/.default`` with exactly one slash: MSAL caches the two spellings apart (§2)."""
    return resource_url.rstrip("/") + "/.default"


class AppTokens:
    """Client-credential tokens of the app for a fixed set of scopes, from one MSAL application.

    The ``ConfidentialClientApplication`` is built on first use (it fetches the authority's OpenID
    configuration) and kept: its token cache is the only one, and MSAL renews a token with under 300 s
    left. :meth:`acquire` raises what MSAL and requests raise; the caller classifies it.
    """

    def __init__(self, config: IntuneConfig, session: requests.Session, scopes: Iterable[str]) -> None:
        self._config = config
        self._credential = app_credential(config)
        self._secrets = secret_strings(config, self._credential)
        self._session = session
        self._app: msal.ConfidentialClientApplication | None = None
        self._app_lock = threading.Lock()
        # MSAL does not coalesce concurrent cache misses: without these, N threads fetch N tokens.
        self._scope_locks = {scope: threading.Lock() for scope in scopes}

    def acquire(self, scope: str, activity_id: str) -> Any:
        """MSAL's answer for ``scope``: a dict with ``access_token``, or with ``error`` and its description."""
        with self._scope_locks[scope]:
            return self._msal(activity_id).acquire_token_for_client(scopes=[scope])

    def drop(self, activity_id: str) -> None:
        """Forget every cached token of the app (after a 401: a token may have been revoked)."""
        self._msal(activity_id).remove_tokens_for_client()

    def redact(self, value: object) -> str:
        """``value`` as text with the client secret, key password and proxy password masked."""
        text = str(value)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _msal(self, activity_id: str) -> msal.ConfidentialClientApplication:
        with self._app_lock:
            if self._app is None:
                self._app = self._build(activity_id)
            return self._app

    def _build(self, activity_id: str) -> msal.ConfidentialClientApplication:
        config = self._config
        authority = f"{config.authority.rstrip('/')}/{config.tenant}"
        options: dict[str, Any] = {}
        if not _is_microsoft_login_host(authority):
            options["instance_discovery"] = False  # else MSAL asks login.microsoftonline.com first (§2)
        try:
            return msal.ConfidentialClientApplication(
                config.client_id, client_credential=self._credential, authority=authority,
                http_client=self._session, **options,
            )
        except ValueError as exc:
            raise IntuneAuthError(f"Entra ID authority {authority} is unusable (check intune.authority and "
                                  f"intune.tenant): {_first_line(self.redact(exc))}",
                                  activity_id=activity_id) from None


def _is_microsoft_login_host(authority: str) -> bool:
    return (urlsplit(authority).hostname or "").lower() in MICROSOFT_LOGIN_HOSTS


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0].strip() if lines else ""


# --- credentials (no I/O but reading the credential files) -------------------------------------------


def app_credential(config: IntuneConfig) -> str | dict[str, str]:
    """The MSAL ``client_credential``: the secret, or key + certificate for a PS256 assertion (§2)."""
    if not config.tenant or not config.client_id:
        raise ConfigError("Intune needs intune.tenant and intune.client_id (TENANT and AAD_APP_ID)")
    if config.client_certificate and config.client_key:
        return _certificate_credential(config.client_certificate, config.client_key,
                                       config.client_key_password.resolve())
    secret = config.client_secret.resolve()
    if not secret:
        raise ConfigError("Intune needs intune.client_secret (AAD_APP_KEY) or intune.client_certificate + client_key")
    return secret


def _certificate_credential(cert_path: str, key_path: str, password: str | None) -> dict[str, str]:
    certificate, key = _read(cert_path), _read(key_path)
    try:
        x509.load_pem_x509_certificate(certificate.encode("ascii"))
    except ValueError:
        raise ConfigError(f"intune.client_certificate {cert_path} is not a PEM certificate") from None
    try:
        load_pem_private_key(key.encode("ascii"), password.encode("utf-8") if password else None)
    except (ValueError, TypeError):
        raise ConfigError(f"intune.client_key {key_path} is not a PEM private key, or the password "
                          "(intune.client_key_password) does not open it") from None
    credential = {"private_key": key, "public_certificate": certificate}
    if password:
        credential["passphrase"] = password
    return credential


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


def secret_strings(config: IntuneConfig, credential: str | dict[str, str]) -> tuple[str, ...]:
    """Values that must never appear in a message: the secret, key password, proxy password."""
    values = [credential] if isinstance(credential, str) else [credential.get("passphrase", "")]
    proxy_password = config.proxy_password.resolve() or ""
    values += [proxy_password, quote(proxy_password, safe="")]  # the proxy URL carries it percent-encoded
    return tuple(v for v in dict.fromkeys(values) if v)
