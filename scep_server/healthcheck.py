"""The container's HEALTHCHECK: ``python -m scep_server.healthcheck`` asks ``/livez`` where the server listens.

The address comes from ``SCEP_SERVER_BIND`` (as ``serve`` reads it), so a container started with another
port stays healthy; a wildcard host (``0.0.0.0``, ``::``, empty) is asked on the loopback address.
Exit 0 when the server answers 200, else 1 with the reason on stderr. Only the standard library: it
runs every 30 s and must start fast.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_BIND = "127.0.0.1:8080"
PATH = "/livez"
TIMEOUT_SECONDS = 4.0
_WILDCARDS = {"", "0.0.0.0", "::", "[::]", "*"}


def probe_url(bind: str) -> str:
    """The URL of ``/livez`` for a gunicorn bind address ``HOST:PORT`` (``unix:`` sockets are refused)."""
    if bind.startswith("unix:") or ":" not in bind:
        raise ValueError(f"SCEP_SERVER_BIND must be HOST:PORT, not {bind!r}")
    host, _, port = bind.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"SCEP_SERVER_BIND has no valid port: {bind!r}")
    if host in _WILDCARDS:
        host = "[::1]" if host in ("::", "[::]") else "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}{PATH}"


def main() -> int:
    try:
        url = probe_url(os.environ.get("SCEP_SERVER_BIND", DEFAULT_BIND))
    except ValueError as exc:
        print(f"healthcheck: {exc}", file=sys.stderr)
        return 1
    # A proxy from the environment must not stand between the check and the server beside it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_SECONDS) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, urllib.error.URLError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"healthcheck: {url} answered {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
