"""HTTP to Entra ID, Microsoft Graph and Intune: tokens, service discovery, retries (intune-api.md §2-§4).

The only module of the Intune client that does I/O and the only one that turns HTTP statuses and
transport failures into :mod:`scep_server.errors` exceptions. One ``requests.Session`` carries every
request (MSAL's token requests included), so connections are pooled and the CA bundle and proxy apply
everywhere. The API operations and their bodies are in :mod:`.client` and :mod:`.messages`.

Status handling of one call:

=====================  ==========================================================================
2xx                    JSON answer returned; malformed JSON → IntuneProtocolError; never retried
401                    cached tokens dropped, the call made once more; again 401 → IntuneAuthError
403                    IntuneAuthError (a missing permission or admin consent)
429, 5xx               retried with backoff (``Retry-After`` honoured); then IntuneUnavailable
other (3xx included)   IntuneProtocolError; never retried (redirects are not followed)
transport failure      retried; a failed connection to a discovered URL also forgets the discovery
=====================  ==========================================================================

A discovered service URL is only called when it is a plain ``https`` URL on a host of
``intune.allowed_service_hosts`` (an entry matches itself and its subdomains; an IP address only
itself): Graph's answer decides where the Intune token and the device CSRs go, and the service at that
URL decides issuance, so a URL elsewhere is refused (IntuneProtocolError naming the host and the
setting) before any token is attached.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random as _random
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import msal
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from msal.exceptions import MsalServiceError

from scep_server import metrics
from scep_server.config import IntuneConfig
from scep_server.errors import ConfigError, IntuneAuthError, IntuneProtocolError, IntuneUnavailable

__all__ = [
    "IntuneTransport", "Reply", "build_session", "host_allowed", "normalise_scope", "proxy_url", "service_url_problem",
]

logger = logging.getLogger("scep_server.intune")

MICROSOFT_LOGIN_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "login.microsoftonline.de",
    }
)
# OAuth 2.0 error codes that mean "try again later" rather than "your credentials are wrong" (RFC 6749 §5.2
# does not define them for the token endpoint, but Entra ID sends them with HTTP 5xx/429).
TRANSIENT_OAUTH_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
BODY_LOG_LIMIT = 500
POOL_SIZE = 32


@dataclass(frozen=True, slots=True)
class Reply:
    """The JSON answer of one successful Intune call and the activity id it ran under."""

    body: Any
    activity_id: str
    status: int


@dataclass(frozen=True, slots=True)
class _Call:
    operation: str  # for the log: "validateRequest", "discovery", ...
    activity_id: str


class _Transient(Exception):
    """An attempt failed in a way a later attempt may not (transport error, 429, 5xx)."""

    def __init__(self, detail: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.retry_after = retry_after


class _Unauthorized(Exception):
    """HTTP 401: the bearer token was refused (expired early or revoked)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def normalise_scope(resource_url: str) -> str:
    """``{resource}/.default`` with exactly one slash: MSAL caches the two spellings apart (§2)."""
    return resource_url.rstrip("/") + "/.default"


def proxy_url(config: IntuneConfig) -> str | None:
    """``http://user:pass@host:port`` from PROXY_HOST/PORT/USER/PASS (§1); None without a proxy host.

    The host may carry its scheme (``http://proxy``, as Microsoft's C# example writes it); plain
    hosts get ``http://``. User and password are percent-encoded.
    """
    if not config.proxy_host:
        return None
    scheme, _, host = config.proxy_host.rpartition("://")
    netloc = host.rstrip("/")
    if config.proxy_port:
        netloc = f"{netloc}:{int(config.proxy_port)}"
    if config.proxy_user:
        password = config.proxy_password.resolve() or ""
        netloc = f"{quote(config.proxy_user, safe='')}:{quote(password, safe='')}@{netloc}"
    return f"{scheme or 'http'}://{netloc}"


class _Session(requests.Session):
    """A session whose requests time out even when the caller (MSAL) names no timeout."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self.default_timeout = timeout

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return super().request(method, url, *args, **kwargs)


def build_session(config: IntuneConfig) -> requests.Session:
    """The one session for Entra ID, Graph and Intune (§2: pin the CA bundle, configure the proxy).

    ``trust_env=False`` keeps ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` and ``*_PROXY`` from
    overriding the configuration, so the proxy is set explicitly here.
    """
    session = _Session((config.connect_timeout, config.read_timeout))
    session.trust_env = False
    # Room for a threaded server's concurrent calls; urllib3 retries stay off (the retry loop is ours).
    session.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=POOL_SIZE, max_retries=0))
    session.verify = config.ca_bundle or system_ca_bundle() or True
    proxy = proxy_url(config)
    if proxy:
        session.proxies = {"http": proxy, "https": proxy}
    session.headers["User-Agent"] = config.provider_name_and_version  # the same as UserAgent (§2)
    return session


def system_ca_bundle() -> str | None:
    """The operating system's CA bundle as OpenSSL knows it (e.g. Debian's ca-certificates), if any.

    requests would otherwise use certifi's bundle, which misses the enterprise roots an admin added to
    the system store (TLS-inspecting proxies, private clouds).
    """
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def _first_line(text: object) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def _body_excerpt(response: requests.Response) -> str:
    return response.text[:BODY_LOG_LIMIT].replace("\n", " ")


def _is_microsoft_login_host(authority: str) -> bool:
    return (urlsplit(authority).hostname or "").lower() in MICROSOFT_LOGIN_HOSTS


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    """Whether ``host`` is an entry of ``allowed`` or a subdomain of one (IP address entries match exactly)."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        suffix = entry.lower().removeprefix("*.").strip(".")
        if host == suffix or (not _is_ip_address(suffix) and host.endswith(f".{suffix}")):
            return True
    return False


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def service_url_problem(uri: str, allowed: Iterable[str]) -> str | None:
    """Why a Graph-discovered service URL must not be called, or None when it may (module doc)."""
    allowed = tuple(allowed)
    try:
        parts = urlsplit(uri)
        host, _ = parts.hostname, parts.port  # .port raises on a malformed port
    except ValueError:
        return f"{uri!r} is not a valid URL"
    if parts.scheme != "https":
        return f"{uri!r} does not use https"
    # Userinfo, backslashes and non-ASCII are where URL parsers disagree about the host.
    if not host or "@" in parts.netloc or not uri.isascii() or any(c in uri for c in "\\ \t\r\n"):
        return f"{uri!r} is not a plain https URL"
    if not host_allowed(host, allowed):
        return f"host {host} is not in intune.allowed_service_hosts ({', '.join(allowed)})"
    return None


class IntuneTransport:
    """MSAL, service discovery and retried JSON POSTs to Intune, over one pooled session.

    ``sleep`` and ``random`` (a float in [0, 1)) are injectable so tests see the backoff exactly.
    One MSAL ``ConfidentialClientApplication`` is built on first use and kept: its token cache is
    the only one (MSAL renews a token with under 300 s left).
    """

    def __init__(
        self,
        config: IntuneConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.config = config
        self._credential = _credential(config)
        self._secrets = _secret_strings(config, self._credential)
        self.session = build_session(config)
        self._sleep = sleep
        self._random = random
        self._graph_scope = normalise_scope(config.graph_resource_url)
        self._intune_scope = normalise_scope(config.intune_resource_url)
        self._app: msal.ConfidentialClientApplication | None = None
        self._app_lock = threading.Lock()
        # MSAL does not coalesce concurrent cache misses: without this, N threads fetch N tokens.
        self._token_locks = {self._graph_scope: threading.Lock(), self._intune_scope: threading.Lock()}
        self._services: dict[str, str] | None = None
        self._services_lock = threading.Lock()

    # --- public -------------------------------------------------------------------------------------

    def post(self, operation: str, service: str, api_version: str, path: str, body: Mapping[str, Any]) -> Reply:
        """POST ``body`` to ``{serviceUri}/{path}`` of the discovered ``service`` (§4), with retries.

        The activity id (``client-request-id``) is one uuid4 for the call, kept across its attempts so
        Intune's and our logs correlate; errors carry it as ``activity_id``.
        """
        call = _Call(operation, str(uuid.uuid4()))
        refreshed, retries, attempt = False, 0, 0
        while True:
            attempt += 1
            try:
                return self._attempt(call, service, api_version, path, body, attempt)
            except _Unauthorized as exc:
                if refreshed:
                    raise IntuneAuthError(f"{operation}: {exc.detail} even with a new token",
                                          activity_id=call.activity_id, status=401) from None
                refreshed = True
                self._drop_tokens(call)
            except _Transient as exc:
                if retries >= self.config.max_retries:
                    raise self._unavailable(call, exc, attempt) from None
                retries += 1
                self._back_off(call, exc, retries)

    def discover(self) -> dict[str, str]:
        """Fetch tokens and ask Graph for the service map now, refreshing the cache (for admins' checks)."""
        call = _Call("discovery check", str(uuid.uuid4()))
        try:
            services = self._discover(call, 1)
        except _Transient as exc:
            raise self._unavailable(call, exc, 1) from None
        except _Unauthorized as exc:
            raise IntuneAuthError(f"Graph refused the token: {exc.detail}", activity_id=call.activity_id) from None
        with self._services_lock:
            self._services = services
        return dict(services)

    def service_problem(self, uri: str) -> str | None:
        """Why this transport would refuse to call the discovered ``uri``, or None (for admins' checks)."""
        return service_url_problem(uri, self.config.allowed_service_hosts)

    def forget_services(self) -> None:
        """Drop the discovered service URLs; the next call asks Graph again (§3)."""
        with self._services_lock:
            self._services = None

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    # --- one attempt --------------------------------------------------------------------------------

    def _attempt(
        self, call: _Call, service: str, api_version: str, path: str, body: Mapping[str, Any], attempt: int
    ) -> Reply:
        url = f"{self._service_url(service, call, attempt)}/{path.lstrip('/')}"
        headers = {
            "Authorization": f"Bearer {self._token(self._intune_scope, call)}",
            "content-type": "application/json",
            "client-request-id": call.activity_id,
            "api-version": api_version,
            "UserAgent": self.config.provider_name_and_version,
        }
        response = self._send(call, "POST", url, headers, attempt, body=body, discovered=True)
        return Reply(self._checked(call, response, "Intune"), call.activity_id, response.status_code)

    def _send(
        self, call: _Call, method: str, url: str, headers: Mapping[str, str], attempt: int, *,
        body: Mapping[str, Any] | None = None, discovered: bool = False,
    ) -> requests.Response:
        started = time.monotonic()
        timeout = (self.config.connect_timeout, self.config.read_timeout)
        try:
            # Never follow redirects: a redirect could carry the CSR to, and the answer from, another host.
            response = self.session.request(method, url, headers=dict(headers), json=body, timeout=timeout,
                                            allow_redirects=False)
        except requests.RequestException as exc:
            self._log(call, None, started, attempt)
            raise self._transport_failure(call, exc, url, discovered) from None
        self._log(call, response.status_code, started, attempt)
        return response

    def _transport_failure(self, call: _Call, exc: requests.RequestException, url: str, discovered: bool) -> Exception:
        host = urlsplit(url).netloc
        if isinstance(exc, requests.exceptions.SSLError):  # a ConnectionError, but retrying will not help
            return IntuneUnavailable(f"TLS with {host} failed (check intune.ca_bundle): {self._redact(exc)}",
                                     activity_id=call.activity_id)
        if isinstance(exc, requests.ConnectionError) and discovered:
            # The service may have moved (§3): rediscover before the next attempt.
            self.forget_services()
        if isinstance(exc, requests.ConnectionError | requests.Timeout):
            return _Transient(f"{type(exc).__name__} talking to {host}")
        return IntuneProtocolError(f"request to {host} failed: {self._redact(exc)}", activity_id=call.activity_id)

    def _checked(self, call: _Call, response: requests.Response, party: str) -> Any:
        """The JSON of a 2xx answer, else the exception its status means (table in the module doc)."""
        status = response.status_code
        if 200 <= status < 300:
            try:
                return response.json()
            except ValueError:
                raise IntuneProtocolError(f"{party} answered HTTP {status} with malformed JSON",
                                          activity_id=call.activity_id, status=status) from None
        logger.warning("%s %s answered HTTP %d activity=%s body=%s", party, call.operation, status,
                       call.activity_id, _body_excerpt(response))
        if status == 401:
            raise _Unauthorized(f"{party} refused the bearer token (HTTP 401)")
        if status == 403:
            raise IntuneAuthError(f"{party} refused the call (HTTP 403): grant the app the {_permission(party)} "
                                  "permission with admin consent", activity_id=call.activity_id, status=status)
        if status == 429 or status >= 500:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise _Transient(f"{party} answered HTTP {status}", status=status, retry_after=retry_after)
        raise IntuneProtocolError(f"{party} {call.operation} answered HTTP {status}: {_body_excerpt(response)}",
                                  activity_id=call.activity_id, status=status)

    # --- retries ------------------------------------------------------------------------------------

    def _back_off(self, call: _Call, exc: _Transient, retry: int) -> None:
        delay = self._delay(exc.retry_after, retry)
        logger.warning("retrying %s activity=%s in %.2fs after %s (retry %d of %d)", call.operation,
                       call.activity_id, delay, exc.detail, retry, self.config.max_retries)
        self._sleep(delay)

    def _delay(self, retry_after: float | None, retry: int) -> float:
        """``Retry-After`` (capped at 4 × backoff_max), else exponential backoff with full jitter."""
        if retry_after is not None:
            return min(retry_after, self.config.backoff_max * 4)
        ceiling = min(self.config.backoff_max, self.config.backoff_base * 2.0 ** (retry - 1))
        return self._random() * ceiling

    def _unavailable(self, call: _Call, exc: _Transient, attempts: int) -> IntuneUnavailable:
        retry_after = None if exc.retry_after is None else min(exc.retry_after, self.config.backoff_max * 4)
        return IntuneUnavailable(f"{call.operation}: {exc.detail} ({attempts} attempts)",
                                 activity_id=call.activity_id, status=exc.status, retry_after=retry_after)

    # --- service discovery (§3) ---------------------------------------------------------------------

    def _service_url(self, service: str, call: _Call, attempt: int) -> str:
        with self._services_lock:
            if self._services is None:
                self._services = self._discover(call, attempt)
            services = self._services
        uri = services.get(service.lower())
        if uri is None:
            raise IntuneProtocolError(f"Graph service discovery lists no {service} for this tenant",
                                      activity_id=call.activity_id)
        problem = self.service_problem(uri)
        if problem is not None:
            logger.error("refusing the %s URL from Graph discovery activity=%s: %s", service, call.activity_id, problem)
            raise IntuneProtocolError(f"refusing the {service} URL Graph discovery returned: {problem}; the Intune "
                                      "token and device requests go only to hosts listed there",
                                      activity_id=call.activity_id)
        return uri.rstrip("/")

    def _discover(self, call: _Call, attempt: int) -> dict[str, str]:
        config = self.config
        url = (f"{config.graph_resource_url.rstrip('/')}/v{config.graph_api_version}"
               f"/servicePrincipals/appId={config.intune_app_id}/endpoints")
        lookup = _Call("discovery", str(uuid.uuid4()))
        logger.info("discovering Intune services activity=%s for=%s", lookup.activity_id, call.activity_id)
        headers = {"Authorization": f"Bearer {self._token(self._graph_scope, call)}",
                   "client-request-id": lookup.activity_id, "Accept": "application/json"}
        return _service_map(self._checked(lookup, self._send(lookup, "GET", url, headers, attempt), "Graph"))

    # --- tokens (§2) --------------------------------------------------------------------------------

    def _token(self, scope: str, call: _Call) -> str:
        try:
            with self._token_locks[scope]:
                result = self._msal(call).acquire_token_for_client(scopes=[scope])
        except (requests.RequestException, MsalServiceError) as exc:
            raise self._token_transport_failure(call, exc) from None
        except ValueError as exc:
            raise IntuneProtocolError(f"Entra ID answered the token request with something unreadable: "
                                      f"{_first_line(self._redact(exc))}", activity_id=call.activity_id) from None
        return self._access_token(result, scope, call)

    def _access_token(self, result: Any, scope: str, call: _Call) -> str:
        token = result.get("access_token") if isinstance(result, dict) else None
        if isinstance(token, str):
            return token
        if not isinstance(result, dict) or "error" not in result:
            raise IntuneProtocolError("Entra ID answered the token request without a token",
                                      activity_id=call.activity_id)
        error, description = result.get("error"), _first_line(self._redact(result.get("error_description")))
        if error in TRANSIENT_OAUTH_ERRORS:
            raise _Transient(f"Entra ID: {error}: {description}")
        raise IntuneAuthError(f"Entra ID refused the app credentials: {error}: {description} (scope {scope})",
                              activity_id=call.activity_id)

    def _token_transport_failure(self, call: _Call, exc: Exception) -> Exception:
        if isinstance(exc, requests.exceptions.SSLError):
            return IntuneUnavailable(f"TLS with Entra ID failed (check intune.ca_bundle): {self._redact(exc)}",
                                     activity_id=call.activity_id)
        return _Transient(f"cannot get a token from Entra ID: {type(exc).__name__}")

    def _drop_tokens(self, call: _Call) -> None:
        """Forget cached tokens after a 401 (a token may have been revoked); MSAL drops all app tokens."""
        logger.warning("%s activity=%s: token refused, fetching a new one", call.operation, call.activity_id)
        try:
            self._msal(call).remove_tokens_for_client()
        except requests.RequestException as exc:  # Microsoft hosts: MSAL looks up authority aliases
            raise IntuneUnavailable(f"cannot reach Entra ID: {type(exc).__name__}",
                                    activity_id=call.activity_id) from None

    def _msal(self, call: _Call) -> msal.ConfidentialClientApplication:
        with self._app_lock:
            if self._app is None:
                self._app = self._build_msal(call)
            return self._app

    def _build_msal(self, call: _Call) -> msal.ConfidentialClientApplication:
        """MSAL fetches the authority's OpenID configuration here (§2), hence built on first use."""
        config = self.config
        authority = f"{config.authority.rstrip('/')}/{config.tenant}"
        options: dict[str, Any] = {}
        if not _is_microsoft_login_host(authority):
            options["instance_discovery"] = False  # else MSAL asks login.microsoftonline.com first (§2)
        try:
            return msal.ConfidentialClientApplication(
                config.client_id, client_credential=self._credential, authority=authority,
                http_client=self.session, **options,
            )
        except (requests.RequestException, MsalServiceError) as exc:
            raise self._token_transport_failure(call, exc) from None
        except ValueError as exc:
            raise IntuneAuthError(f"Entra ID authority {authority} is unusable (check intune.authority and "
                                  f"intune.tenant): {_first_line(self._redact(exc))}",
                                  activity_id=call.activity_id) from None

    def _redact(self, value: object) -> str:
        text = str(value)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _log(self, call: _Call, status: int | None, started: float, attempt: int) -> None:
        elapsed = time.monotonic() - started
        label = str(status) if status is not None else "error"
        logger.info("intune %s activity=%s status=%s elapsed_ms=%.0f attempt=%d", call.operation,
                    call.activity_id, label, elapsed * 1000, attempt)
        metrics.INTUNE_CALLS.labels(call.operation, label).inc()
        metrics.INTUNE_CALL_SECONDS.labels(call.operation).observe(elapsed)


# --- configuration checks (no I/O but reading the credential files) -----------------------------------


def _credential(config: IntuneConfig) -> str | dict[str, str]:
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


def _secret_strings(config: IntuneConfig, credential: str | dict[str, str]) -> tuple[str, ...]:
    """Values that must never appear in a message: the secret, key password, proxy password."""
    values = [credential] if isinstance(credential, str) else [credential.get("passphrase", "")]
    proxy_password = config.proxy_password.resolve() or ""
    values += [proxy_password, quote(proxy_password, safe="")]  # the proxy URL carries it percent-encoded
    return tuple(v for v in dict.fromkeys(values) if v)


def _permission(party: str) -> str:
    return "Graph Application.Read.All" if party == "Graph" else "Intune scep_challenge_provider"


def _service_map(body: Any) -> dict[str, str]:
    """``{"value": [{"providerName", "uri"}, ...]}`` → lower-cased providerName → uri (§3)."""
    if not isinstance(body, dict) or not isinstance(body.get("value"), list):
        raise IntuneProtocolError("Graph service discovery answered without a 'value' list")
    services: dict[str, str] = {}
    for entry in body["value"]:
        if not isinstance(entry, dict):
            raise IntuneProtocolError("Graph service discovery listed a non-object endpoint")
        name, uri = entry.get("providerName"), entry.get("uri")
        if isinstance(name, str) and isinstance(uri, str):  # checked when called (service_url_problem)
            services[name.lower()] = uri
    return services


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP-date (RFC 9110 §10.2.3); None if absent/bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())
