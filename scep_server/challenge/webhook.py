"""The ``webhook`` validator: an HTTPS endpoint of the operator's decides every request.

For each request the validator POSTs a JSON description of it (:mod:`.webhook_messages`), signed with
the profile's shared secret (:mod:`.webhook_signature`), to ``challenge.url`` and issues only on an
explicit allow. docs/webhook-challenge.md describes both documents and the signature.

=============================================  ========================================================
the webhook answers                            outcome
=============================================  ========================================================
HTTP 2xx, ``{"allow": true, ...}``             accepted, narrowed as the answer says (``sans``,
                                               ``validity_days``)
HTTP 2xx or 4xx, ``{"allow": false, ...}``     refused: ``WebhookDenied``, the reason in the log and audit
timeout, no connection, TLS failure, 429, 5xx  undecided (ValidatorUnavailable): FAILURE, or PENDING and
                                               background retries (``on_validator_unavailable: pending``)
a 3xx, another 4xx, a body that is no answer   refused: ``WebhookInvalidAnswer`` (fail closed)
an allow naming a name that was not asked for  refused: ``WebhookWidened``
=============================================  ========================================================

Redirects are not followed (they could carry the challenge elsewhere), proxies and CA bundles from the
environment are not used. Connecting and each read wait at most ``challenge.timeout`` seconds, and the
answer's body must be complete within that time of sending.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import requests

from scep_server import __version__
from scep_server.challenge import (
    ChallengeValidator,
    IssuanceNarrowing,
    IssuedCertificate,
    Resources,
    ValidationRequest,
    register,
)
from scep_server.challenge.webhook_messages import (
    DENIED,
    INVALID_ANSWER,
    Answer,
    narrowing_for,
    read_answer,
    request_body,
    request_document,
)
from scep_server.challenge.webhook_signature import signed_headers
from scep_server.config.model import ChallengeConfig, SecretSource
from scep_server.config.parsing import parser, shown
from scep_server.errors import ChallengeRejected, ConfigError, ValidatorUnavailable
from scep_server.intune.transport import system_ca_bundle
from scep_server.pki.names import printable

__all__ = ["WebhookChallenge", "WebhookChallengeConfig", "WebhookClient", "WebhookReply", "WebhookTlsConfig"]

DEFAULT_TIMEOUT = 5.0
MAX_TIMEOUT = 30.0
MAX_ANSWER_BYTES = 64 * 1024
MIN_SECRET_BYTES = 16
_CHUNK = 8192

log = logging.getLogger("scep_server.challenge.webhook")


def _seconds(raw: Any, where: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw <= MAX_TIMEOUT:
        raise ConfigError(f"{where} must be a number of seconds above 0 and at most {MAX_TIMEOUT:g}, not {shown(raw)}")
    return float(raw)


@dataclass(frozen=True, slots=True)
class WebhookTlsConfig:
    """``challenge.tls``: the CA file that verifies the webhook's certificate (default: the system's CAs),
    and the client certificate (with its key, or a PEM holding both) the server authenticates with."""

    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def check(self, where: str) -> None:
        if self.client_key and not self.client_cert:
            raise ConfigError(f"{where}.client_key needs {where}.client_cert")

    def files(self) -> dict[str, str]:
        """The configured files by setting name."""
        named = {"ca_file": self.ca_file, "client_cert": self.client_cert, "client_key": self.client_key}
        return {name: path for name, path in named.items() if path}


@dataclass(frozen=True, slots=True)
class WebhookChallengeConfig(ChallengeConfig):
    """``challenge: {type: webhook, url, secret, timeout, tls, allow_insecure_http}``.

    ``url``: where requests are POSTed, https (plain http only with ``allow_insecure_http: true``, for local
    tests). ``secret``: the HMAC key of the signature (at least 16 bytes). ``timeout``: seconds, up to 30,
    for the whole exchange.
    """

    type: str = "webhook"
    url: str = ""
    secret: SecretSource = field(
        default_factory=lambda: SecretSource(env="SCEP_WEBHOOK_SECRET"), metadata=parser(SecretSource.parse)
    )
    timeout: float = field(default=DEFAULT_TIMEOUT, metadata=parser(_seconds))
    tls: WebhookTlsConfig = field(default_factory=WebhookTlsConfig)
    allow_insecure_http: bool = False

    def check(self, where: str) -> None:
        problem = url_problem(self.url, allow_insecure_http=self.allow_insecure_http)
        if problem is not None:
            raise ConfigError(f"{where}.url: {problem}")


def url_problem(url: str, *, allow_insecure_http: bool) -> str | None:
    """Why ``url`` cannot be the webhook's, or None."""
    if not url:
        return "set the https URL of the webhook"
    if any(char.isspace() or not char.isprintable() for char in url):
        return f"{shown(url)} holds spaces or control characters"
    parts = urlsplit(url)
    if parts.scheme == "http" and not allow_insecure_http:
        return (f"{shown(url)} is plain http, which sends every challenge in the clear: use https "
                "(or set allow_insecure_http: true, for local tests only)")
    if parts.scheme not in ("https", "http"):
        return f"{shown(url)} is not an https URL"
    try:
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        return f"{shown(url)} has an invalid port"
    if not parts.hostname:
        return f"{shown(url)} names no host"
    if parts.username is not None or parts.password is not None:
        return f"{printable(parts.scheme)}://... carries credentials: use the signature or tls.client_cert"
    return None


@dataclass(frozen=True, slots=True)
class WebhookReply:
    """What the webhook answered: its status, its body (at most MAX_ANSWER_BYTES) and Retry-After."""

    status: int
    body: bytes
    retry_after: float | None = None


class WebhookClient:
    """Signed POSTs to one webhook over one pooled session."""

    def __init__(self, url: str, secret: bytes, *, timeout: float, tls: WebhookTlsConfig) -> None:
        self.url = url
        self.host = urlsplit(url).netloc
        self._secret = secret
        self._timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy or CA bundle from the environment: the configuration says
        self._session.verify = tls.ca_file or system_ca_bundle() or True
        if tls.client_cert:
            self._session.cert = (tls.client_cert, tls.client_key) if tls.client_key else tls.client_cert
        self._session.headers["User-Agent"] = f"scep-server/{__version__}"

    def post(self, body: bytes) -> WebhookReply:
        """POST ``body`` signed; ValidatorUnavailable when no whole answer came within the timeout,
        ChallengeRejected(WebhookInvalidAnswer) for one over MAX_ANSWER_BYTES."""
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Encoding": "identity",  # the size cap counts what was sent
            **signed_headers(self._secret, body, timestamp=int(time.time()), delivery_id=str(uuid.uuid4())),
        }
        deadline = time.monotonic() + self._timeout
        try:
            with self._session.post(self.url, data=body, headers=headers, timeout=self._timeout,
                                    allow_redirects=False, stream=True) as response:
                content = self._read(response, deadline)
                return WebhookReply(response.status_code, content, _retry_after(response.headers.get("Retry-After")))
        except requests.Timeout as exc:
            raise ValidatorUnavailable(f"the webhook {self.host} did not answer within {self._timeout:g} s") from exc
        except requests.exceptions.SSLError as exc:
            raise ValidatorUnavailable(f"TLS with the webhook {self.host} failed (check challenge.tls): "
                                       f"{printable(str(exc))[:200]}") from exc
        except requests.RequestException as exc:
            raise ValidatorUnavailable(f"the webhook {self.host} could not be reached ({type(exc).__name__})") from exc

    def _read(self, response: requests.Response, deadline: float) -> bytes:
        chunks: list[bytes] = []
        size = 0
        # read1: what one receive brings, so the deadline is looked at after each, not only once 8 KiB are
        # in (a webhook dripping a byte at a time would otherwise hold the request far past the timeout).
        while chunk := response.raw.read1(_CHUNK):
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise ChallengeRejected(f"the webhook's answer exceeds {MAX_ANSWER_BYTES // 1024} KiB",
                                        reason=INVALID_ANSWER)
            if time.monotonic() > deadline:
                raise requests.Timeout("the answer did not arrive whole in time")
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._session.close()


@register
class WebhookChallenge:
    """Asks the profile's webhook about each request; only an explicit allow issues."""

    name = "webhook"
    # Each request is put to the webhook once, on the claimed path: the one-step path (False) asks again
    # after a refusal or an outage to record why, which would send the webhook a second delivery.
    confirms_issuance = True
    validates_renewals = True  # the request names its message_type: the webhook decides renewals too
    settings_class = WebhookChallengeConfig
    may_be_unavailable = True

    def __init__(self, profile: str, client: WebhookClient) -> None:
        self.profile = profile
        self.client = client

    @classmethod
    def from_settings(cls, profile: str, settings: ChallengeConfig, resources: Resources) -> ChallengeValidator:
        """The validator of the profile's webhook; ConfigError for a bad URL, a missing or short secret or a
        TLS file that is not there."""
        if not isinstance(settings, WebhookChallengeConfig):
            raise TypeError(f"the webhook challenge takes WebhookChallengeConfig, not {type(settings).__name__}")
        problem = url_problem(settings.url, allow_insecure_http=settings.allow_insecure_http)
        if problem is not None:
            raise ConfigError(f"profile {profile!r}: challenge.url: {problem}")
        secret = (settings.secret.resolve() or "").encode("utf-8")
        if len(secret) < MIN_SECRET_BYTES:
            source = settings.secret.env or settings.secret.file or "challenge.secret"
            raise ConfigError(f"profile {profile!r}: the webhook secret must be at least {MIN_SECRET_BYTES} "
                              f"bytes (set {source})")
        for name, path in settings.tls.files().items():
            if not Path(path).is_file():
                raise ConfigError(f"profile {profile!r}: challenge.tls.{name} {printable(path)} is not a file")
        client = WebhookClient(settings.url, secret, timeout=settings.timeout, tls=settings.tls)
        return cls(profile, client)

    def validate(self, request: ValidationRequest) -> IssuanceNarrowing | None:
        body = request_body(request_document(request, datetime.now(UTC)))
        try:
            reply = self.client.post(body)
            return self._decide(request, reply)
        except ValidatorUnavailable as exc:
            log.warning("webhook undecided profile=%s transaction=%s: %s", request.profile, request.transaction_id,
                        exc.detail)
            raise
        except ChallengeRejected as exc:
            if exc.reason != DENIED:
                log.error("webhook answer refused profile=%s transaction=%s reason=%s: %s", request.profile,
                          request.transaction_id, exc.reason, exc.detail)
            raise

    def _decide(self, request: ValidationRequest, reply: WebhookReply) -> IssuanceNarrowing | None:
        status = reply.status
        if status == 429 or status >= 500:
            raise ValidatorUnavailable(f"the webhook {self.client.host} answered HTTP {status}",
                                       retry_after=reply.retry_after)
        if not (200 <= status < 300 or 400 <= status < 500):
            raise ChallengeRejected(f"the webhook answered HTTP {status} (redirects are not followed)",
                                    reason=INVALID_ANSWER)
        answer = read_answer(reply.body, status)
        if not answer.allow:
            self._denied(request, answer)
        if status >= 300:
            raise ChallengeRejected(f"the webhook answered HTTP {status} with allow: true; only a 2xx allows",
                                    reason=INVALID_ANSWER)
        narrowing = narrowing_for(answer, request.csr)
        log.info("webhook allowed profile=%s transaction=%s narrowed=%s reason=%r", request.profile,
                 request.transaction_id, narrowing is not None, answer.reason)
        return narrowing

    def _denied(self, request: ValidationRequest, answer: Answer) -> NoReturn:
        reason = answer.reason or "no reason given"
        log.warning("webhook denied profile=%s transaction=%s reason=%r", request.profile, request.transaction_id,
                    reason)
        raise ChallengeRejected(f"the webhook denied the request: {reason}", reason=DENIED)

    def notify_issued(self, request: ValidationRequest, issued: IssuedCertificate) -> None:
        """The webhook decided before issuance; it is not told of it."""

    def notify_failed(self, request: ValidationRequest, hresult: int, description: str) -> None:
        """The webhook decided before issuance; it is not told of it."""


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (a number or an HTTP date), capped at an hour; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value) if value.strip().isdigit() else (
            parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
    except (TypeError, ValueError):
        return None
    return min(max(seconds, 0.0), 3600.0)
