"""Graph service discovery of the Intune services, and the allow-list their URLs must pass (intune-api.md §3).

Graph's ``servicePrincipals/appId={Intune}/endpoints`` names, per tenant, the URL of each Intune service.
A discovered URL is only called when it is a plain ``https`` URL on a host of
``intune.allowed_service_hosts`` (an entry matches itself and its subdomains; an IP address only
itself): Graph's answer decides where the Intune token and the device CSRs go, and the service at that
URL decides issuance, so a URL elsewhere is refused (IntuneProtocolError naming the host and the
setting) before any token is attached.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from scep_server.config.model import IntuneConfig
from scep_server.errors import IntuneProtocolError

__all__ = ["ServiceDirectory", "discovery_url", "host_allowed", "service_map", "service_url_problem"]

logger = logging.getLogger("scep_server.intune")


def discovery_url(config: IntuneConfig) -> str:
    """Graph's endpoint listing the Intune services of the tenant (§3)."""
    return (f"{config.graph_resource_url.rstrip('/')}/v{config.graph_api_version}"
            f"/servicePrincipals/appId={config.intune_app_id}/endpoints")


def service_map(body: Any) -> dict[str, str]:
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


class ServiceDirectory:
    """The discovered service URLs, kept until :meth:`forget`; thread-safe, one discovery at a time."""

    def __init__(self, allowed_hosts: Iterable[str]) -> None:
        self._allowed = tuple(allowed_hosts)
        self._services: dict[str, str] | None = None
        self._lock = threading.Lock()

    def url(self, service: str, activity_id: str, discover: Callable[[], dict[str, str]]) -> str:
        """The usable URL of ``service`` (no trailing slash), discovering first when nothing is known."""
        with self._lock:
            if self._services is None:
                self._services = discover()
            services = self._services
        uri = services.get(service.lower())
        if uri is None:
            raise IntuneProtocolError(f"Graph service discovery lists no {service} for this tenant",
                                      activity_id=activity_id)
        problem = self.problem(uri)
        if problem is not None:
            logger.error("refusing the %s URL from Graph discovery activity=%s: %s", service, activity_id, problem)
            raise IntuneProtocolError(f"refusing the {service} URL Graph discovery returned: {problem}; the Intune "
                                      "token and device requests go only to hosts listed there",
                                      activity_id=activity_id)
        return uri.rstrip("/")

    def problem(self, uri: str) -> str | None:
        """Why ``uri`` would be refused, or None."""
        return service_url_problem(uri, self._allowed)

    def replace(self, services: dict[str, str]) -> None:
        with self._lock:
            self._services = dict(services)

    def forget(self) -> None:
        """Drop the discovered URLs; the next call asks Graph again (§3)."""
        with self._lock:
            self._services = None
