"""HTTP to Entra ID, Microsoft Graph and Intune: tokens, service discovery, retries (intune-api.md §2-§4).

The only module of the Intune client that does I/O and the only one that turns HTTP statuses and
transport failures, those of token requests included, into :mod:`scep_server.errors` exceptions. One
``requests.Session`` carries every request (MSAL's token requests included), so connections are pooled
and the CA bundle and proxy apply everywhere. The API operations and their bodies are in :mod:`.client`
and :mod:`.messages`.

Status handling of one call:

=====================  ==========================================================================
2xx                    JSON answer returned; malformed JSON → IntuneProtocolError; never retried
401                    cached tokens dropped, the call made once more; again 401 → IntuneAuthError
403                    IntuneAuthError (a missing permission or admin consent)
429, 5xx               retried with backoff (``Retry-After`` honoured); then IntuneUnavailable
other (3xx included)   IntuneProtocolError; never retried (redirects are not followed)
transport failure      retried; a failed connection to a discovered URL also forgets the discovery
=====================  ==========================================================================

Tokens come from :class:`~.auth.AppTokens`; the service URLs from Graph discovery, kept by a
:class:`~.discovery.ServiceDirectory` that refuses a URL off ``intune.allowed_service_hosts`` before any
token is attached.
"""

from __future__ import annotations

import logging
import os
import random as _random
import ssl
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from msal.exceptions import MsalServiceError

from scep_server import logs, metrics
from scep_server.config.model import IntuneConfig
from scep_server.errors import IntuneAuthError, IntuneProtocolError, IntuneUnavailable
from scep_server.intune.auth import AppTokens, normalise_scope
from scep_server.intune.discovery import ServiceDirectory, discovery_url, service_map, service_url_problem

__all__ = ["IntuneTransport", "Reply", "build_session", "proxy_url", "system_ca_bundle"]

logger = logging.getLogger("scep_server.intune")

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


def _token_failed(reason: str) -> None:
    metrics.ENTRA_TOKEN_FAILURES.labels(reason).inc()


def _first_line(text: object) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0].strip() if lines else ""


def _body_excerpt(response: requests.Response) -> str:
    return response.text[:BODY_LOG_LIMIT].replace("\n", " ")


class IntuneTransport:
    """Tokens, service discovery and retried JSON POSTs to Intune, over one pooled session.

    ``sleep`` and ``random`` (a float in [0, 1)) are injectable so tests see the backoff exactly.
    """

    def __init__(
        self,
        config: IntuneConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.config = config
        self.session = build_session(config)
        self._sleep = sleep
        self._random = random
        self._graph_scope = normalise_scope(config.graph_resource_url)
        self._intune_scope = normalise_scope(config.intune_resource_url)
        self._tokens = AppTokens(config, self.session, (self._graph_scope, self._intune_scope))
        self._directory = ServiceDirectory(config.allowed_service_hosts)

    # --- public -------------------------------------------------------------------------------------

    def post(self, operation: str, service: str, api_version: str, path: str, body: Mapping[str, Any]) -> Reply:
        """POST ``body`` to ``{serviceUri}/{path}`` of the discovered ``service`` (§4), with retries.

        The activity id (``client-request-id``) is one uuid4 for the call, kept across its attempts so
        Intune's and our logs correlate; errors carry it as ``activity_id``.
        """
        call = _Call(operation, str(uuid.uuid4()))
        with logs.log_context(activity_id=call.activity_id):
            return self._post_with_retries(call, service, api_version, path, body)

    def _post_with_retries(
        self, call: _Call, service: str, api_version: str, path: str, body: Mapping[str, Any]
    ) -> Reply:
        refreshed, retries, attempt = False, 0, 0
        while True:
            attempt += 1
            try:
                return self._attempt(call, service, api_version, path, body, attempt)
            except _Unauthorized as exc:
                if refreshed:
                    raise IntuneAuthError(f"{call.operation}: {exc.detail} even with a new token",
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
        self._directory.replace(services)
        return dict(services)

    def access_token(self, resource: str, *, fresh: bool = False) -> str:
        """The app's access token for ``resource`` (``"graph"`` or ``"intune"``), one attempt, for checks.

        ``fresh`` drops the cached tokens first, so that Entra ID is asked now (what readiness proves).
        Raises IntuneAuthError when Entra ID refuses the app, IntuneUnavailable when it cannot be asked.
        """
        scope = {"graph": self._graph_scope, "intune": self._intune_scope}[resource]
        call = _Call(f"{resource} token", str(uuid.uuid4()))
        try:
            if fresh:
                self._tokens.drop(call.activity_id)
            return self._token(scope, call)
        except requests.RequestException as exc:  # dropping: MSAL may fetch the authority's metadata first
            raise self._unavailable(call, _Transient(f"cannot reach Entra ID: {type(exc).__name__}"), 1) from None
        except _Transient as exc:
            raise self._unavailable(call, exc, 1) from None

    def graph_get(self, operation: str, url: str) -> Any:
        """GET a Graph URL with the Graph token, one attempt; its JSON (for admins' checks and the expiry radar)."""
        call = _Call(operation, str(uuid.uuid4()))
        try:
            headers = {"Authorization": f"Bearer {self._token(self._graph_scope, call)}",
                       "client-request-id": call.activity_id, "Accept": "application/json"}
            return self._checked(call, self._send(call, "GET", url, headers, 1), "Graph")
        except _Transient as exc:
            raise self._unavailable(call, exc, 1) from None
        except _Unauthorized as exc:
            raise IntuneAuthError(f"Graph refused the token: {exc.detail}", activity_id=call.activity_id) from None

    def graph_request(
        self, operation: str, method: str, url: str, body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """One Graph request with the Graph token (and ``headers``, such as ``Prefer``), one attempt: the
        caller paces its own retries (:mod:`.graph_devices` honours Retry-After within its own bound). A
        refused token is fetched anew once. 429 and 5xx raise IntuneUnavailable carrying the status and
        Graph's Retry-After as sent."""
        call = _Call(operation, str(uuid.uuid4()))
        with logs.log_context(activity_id=call.activity_id):
            for fresh in (False, True):
                try:
                    if fresh:
                        self._drop_tokens(call)
                    sent = {**(headers or {}), "Authorization": f"Bearer {self._token(self._graph_scope, call)}",
                            "client-request-id": call.activity_id, "Accept": "application/json"}
                    response = self._send(call, method, url, sent, 1, body=body)
                    return Reply(self._checked(call, response, "Graph"), call.activity_id, response.status_code)
                except _Transient as exc:
                    raise IntuneUnavailable(f"{operation}: {exc.detail}", activity_id=call.activity_id,
                                            status=exc.status, retry_after=exc.retry_after) from None
                except _Unauthorized as exc:
                    if fresh:
                        raise IntuneAuthError(f"Graph refused the token: {exc.detail}",
                                              activity_id=call.activity_id, status=401) from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def service_problem(self, uri: str) -> str | None:
        """Why this transport would refuse to call the discovered ``uri``, or None (for admins' checks)."""
        return service_url_problem(uri, self.config.allowed_service_hosts)

    def forget_services(self) -> None:
        """Drop the discovered service URLs; the next call asks Graph again (§3)."""
        self._directory.forget()

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
        return self._directory.url(service, call.activity_id, lambda: self._discover(call, attempt))

    def _discover(self, call: _Call, attempt: int) -> dict[str, str]:
        lookup = _Call("discovery", str(uuid.uuid4()))
        logger.info("discovering Intune services activity=%s for=%s", lookup.activity_id, call.activity_id)
        headers = {"Authorization": f"Bearer {self._token(self._graph_scope, call)}",
                   "client-request-id": lookup.activity_id, "Accept": "application/json"}
        response = self._send(lookup, "GET", discovery_url(self.config), headers, attempt)
        return service_map(self._checked(lookup, response, "Graph"))

    # --- tokens (§2) --------------------------------------------------------------------------------

    def _token(self, scope: str, call: _Call) -> str:
        try:
            result = self._tokens.acquire(scope, call.activity_id)
        except (requests.RequestException, MsalServiceError) as exc:
            raise self._token_transport_failure(call, exc) from None
        except ValueError as exc:
            _token_failed("malformed")
            raise IntuneProtocolError(f"Entra ID answered the token request with something unreadable: "
                                      f"{_first_line(self._redact(exc))}", activity_id=call.activity_id) from None
        return self._access_token(result, scope, call)

    def _access_token(self, result: Any, scope: str, call: _Call) -> str:
        token = result.get("access_token") if isinstance(result, dict) else None
        if isinstance(token, str):
            return token
        if not isinstance(result, dict) or "error" not in result:
            _token_failed("malformed")
            raise IntuneProtocolError("Entra ID answered the token request without a token",
                                      activity_id=call.activity_id)
        error, description = result.get("error"), _first_line(self._redact(result.get("error_description")))
        if error in TRANSIENT_OAUTH_ERRORS:
            _token_failed("transient")
            raise _Transient(f"Entra ID: {error}: {description}")
        _token_failed("refused")
        raise IntuneAuthError(f"Entra ID refused the app credentials: {error}: {description} (scope {scope})",
                              activity_id=call.activity_id)

    def _token_transport_failure(self, call: _Call, exc: Exception) -> Exception:
        if isinstance(exc, requests.exceptions.SSLError):
            _token_failed("tls")
            return IntuneUnavailable(f"TLS with Entra ID failed (check intune.ca_bundle): {self._redact(exc)}",
                                     activity_id=call.activity_id)
        _token_failed("transport")
        return _Transient(f"cannot get a token from Entra ID: {type(exc).__name__}")

    def _drop_tokens(self, call: _Call) -> None:
        """Forget cached tokens after a 401 (a token may have been revoked); MSAL drops all app tokens."""
        logger.warning("%s activity=%s: token refused, fetching a new one", call.operation, call.activity_id)
        try:
            self._tokens.drop(call.activity_id)
        except requests.RequestException as exc:  # Microsoft hosts: MSAL looks up authority aliases
            raise IntuneUnavailable(f"cannot reach Entra ID: {type(exc).__name__}",
                                    activity_id=call.activity_id) from None

    def _redact(self, value: object) -> str:
        return self._tokens.redact(value)

    def _log(self, call: _Call, status: int | None, started: float, attempt: int) -> None:
        elapsed = time.monotonic() - started
        label = str(status) if status is not None else "error"
        logger.info("intune %s activity=%s status=%s elapsed_ms=%.0f attempt=%d", call.operation,
                    call.activity_id, label, elapsed * 1000, attempt)
        metrics.INTUNE_CALLS.labels(call.operation, label).inc()
        metrics.INTUNE_CALL_SECONDS.labels(call.operation).observe(elapsed)


def _permission(party: str) -> str:
    return "Graph Application.Read.All" if party == "Graph" else "Intune scep_challenge_provider"


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
