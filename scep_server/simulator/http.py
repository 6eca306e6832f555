"""SCEP over HTTP (RFC 8894 §4): GetCACaps, GetCACert and PKIOperation with one ``requests.Session``.

The only place of the client that does I/O, and the only one that turns HTTP statuses into
exceptions. Message building and checking is in :mod:`.client`.
"""

from __future__ import annotations

import base64
from types import TracebackType

import requests
from cryptography import x509

from scep_server.scep.client import ScepClientError, parse_caps, parse_get_ca_cert

__all__ = ["ScepHttpClient", "ScepHttpError"]

PKI_MESSAGE = "application/x-pki-message"


class ScepHttpError(ScepClientError):
    """The CA answered with an HTTP error, or could not be reached (``status_code`` None)."""

    def __init__(self, operation: str, status_code: int | None, body: str) -> None:
        where = f"HTTP {status_code}" if status_code is not None else "no response"
        super().__init__(f"{operation}: {where}: {body}")
        self.operation = operation
        self.status_code = status_code
        self.body = body


class ScepHttpClient:
    """A SCEP CA at ``url`` (the full path, e.g. ``http://host/scep``), over one keep-alive session."""

    def __init__(self, url: str, session: requests.Session | None = None, timeout: float = 30) -> None:
        self.url = url
        self.timeout = timeout
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()

    def get_ca_caps(self) -> frozenset[str]:
        """The CA's capabilities; an HTTP error means none (RFC 8894 §3.5.2)."""
        response = self._send("GetCACaps", "GET", params={"operation": "GetCACaps"})
        if response.status_code != 200:
            return frozenset()
        return parse_caps(response.content.decode("utf-8", errors="replace"))

    def get_ca_cert(self, message: str | None = None) -> list[x509.Certificate]:
        """The CA (and RA) certificates (RFC 8894 §4.2); ``message`` names a CA on a multi-CA server."""
        params = {"operation": "GetCACert"}
        if message is not None:
            params["message"] = message
        response = self._checked("GetCACert", "GET", params=params)
        return parse_get_ca_cert(response.content, response.headers.get("Content-Type", ""))

    def pki_operation(self, der: bytes, *, method: str = "POST") -> bytes:
        """Send a pkiMessage and return the CertRep bytes (RFC 8894 §4.3).

        GET carries the message base64-encoded and URL-escaped in ``message=`` (§4.1); use it only
        when the CA lacks POSTPKIOperation.
        """
        if method == "POST":
            response = self._checked(
                "PKIOperation",
                "POST",
                params={"operation": "PKIOperation"},
                data=der,
                headers={"Content-Type": PKI_MESSAGE},
            )
        elif method == "GET":
            message = base64.b64encode(der).decode("ascii")
            response = self._checked("PKIOperation", "GET", params={"operation": "PKIOperation", "message": message})
        else:
            raise ValueError(f"method must be POST or GET, not {method!r}")
        return response.content

    def close(self) -> None:
        """Close the session if this client created it."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> ScepHttpClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _checked(
        self,
        operation: str,
        method: str,
        params: dict[str, str],
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        response = self._send(operation, method, params, data, headers)
        if response.status_code != 200:
            body = response.content[:200].decode("utf-8", errors="replace")
            raise ScepHttpError(operation, response.status_code, body)
        return response

    def _send(
        self,
        operation: str,
        method: str,
        params: dict[str, str],
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        try:
            return self.session.request(
                method, self.url, params=params, data=data, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise ScepHttpError(operation, None, str(exc)[:200]) from exc
