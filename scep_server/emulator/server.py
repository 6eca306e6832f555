"""``EmulatorServer``: the emulator over HTTPS on 127.0.0.1, in a background thread.

Werkzeug's threaded server, with two changes that matter for tests that stop Intune mid-flight: TLS
handshakes happen in each connection's thread (a client that connects and says nothing cannot block
the others), and ``stop()`` cuts every open connection, wakes every injected sleep and joins every
thread, so it returns promptly even with keep-alive clients and hung requests. ``start()`` after
``stop()`` listens on the same port again.

The admin API always needs a bearer token: the one given, or one generated here (``admin_token``).
"""

from __future__ import annotations

import logging
import secrets
import socket
import ssl
import threading
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from flask import Flask
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from scep_server.emulator.app import create_app
from scep_server.emulator.state import IntuneEmulator
from scep_server.emulator.tls import ensure_tls_files
from scep_server.emulator.tokens import GRAPH_ROLES, INTUNE_ROLE

HOST = "127.0.0.1"
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0
POLL_INTERVAL = 0.05
log = logging.getLogger("scep_server.emulator.http")


class _Handler(WSGIRequestHandler):
    timeout = IDLE_TIMEOUT

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        path = getattr(self, "path", "").partition("?")[0]
        log.debug("%s %s -> %s", getattr(self, "command", "-"), path, code)

    def log(self, type: str, message: str, *args: Any) -> None:
        log.log(logging.WARNING if type == "error" else logging.DEBUG, message, *args)


class _TLSServer(ThreadedWSGIServer):
    """Threaded WSGI server on an already-bound socket; TLS per connection; stoppable connections."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, listener: socket.socket, app: Flask, context: ssl.SSLContext) -> None:
        super().__init__(HOST, listener.getsockname()[1], app, handler=_Handler, fd=listener.fileno())
        self.ssl_context = context  # for werkzeug: wsgi.url_scheme is https
        self._tls_context = context
        self._connections: set[ssl.SSLSocket] = set()
        self._guard = threading.Lock()
        self._closing = False

    def finish_request(self, request: Any, client_address: Any) -> None:
        connection = self._tls_context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        try:
            if not self._track(connection):
                return
            connection.settimeout(HANDSHAKE_TIMEOUT)
            connection.do_handshake()
            connection.settimeout(None)
            _Handler(connection, client_address, self)
        except OSError as exc:  # the client went away, spoke no TLS, or the server is stopping
            log.debug("connection from %s ended: %s", client_address, exc)
        finally:
            with self._guard:
                self._connections.discard(connection)
            connection.close()

    def close_connections(self) -> None:
        """Refuse new connections and cut the open ones (their threads see EOF and end)."""
        with self._guard:
            self._closing = True
            connections = list(self._connections)
        for connection in connections:
            try:
                socket.socket.shutdown(connection, socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.exception("unexpected error serving %s", client_address)

    def log(self, type: str, message: str, *args: Any) -> None:
        log.log(logging.WARNING if type == "error" else logging.DEBUG, message, *args)

    def _track(self, connection: ssl.SSLSocket) -> bool:
        with self._guard:
            if not self._closing:
                self._connections.add(connection)
            return not self._closing


class EmulatorServer:
    """The emulator on ``https://127.0.0.1:PORT``; a context manager (start on enter, stop on exit)."""

    def __init__(
        self, emulator: IntuneEmulator | None = None, *, port: int = 0, state_dir: Path,
        admin_token: str | None = None,
    ) -> None:
        self.emulator = emulator if emulator is not None else IntuneEmulator()
        self._port = port
        self._tls = ensure_tls_files(Path(state_dir))
        self._context = self._tls.server_context()
        self._interrupt = threading.Event()
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        self._app = create_app(self.emulator, admin_token=self.admin_token, interrupt=self._interrupt)
        self._server: _TLSServer | None = None
        self._thread: threading.Thread | None = None
        self._client: tuple[str, str] | None = None
        self._lock = threading.Lock()

    @property
    def ca_bundle(self) -> Path:
        """PEM of the emulator's CA: what clients verify the server certificate with."""
        return self._tls.ca_bundle

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the emulator has not listened yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        return f"https://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Listen (again) on the port: the one asked for, or the one picked by the first start()."""
        with self._lock:
            if self._server is not None:
                return
            listener = socket.create_server((HOST, self._port), backlog=128)
            try:
                server = _TLSServer(listener, self._app, self._context)
            finally:
                listener.close()
            self._port = server.port
            self._interrupt.clear()
            for host in (HOST, "localhost"):
                self.emulator.add_origin(f"https://{host}:{self._port}")
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": POLL_INTERVAL},
                                            name=f"intune-emulator:{self._port}", daemon=True)
            self._server = server
            self._thread.start()

    def stop(self) -> None:
        """Stop listening, cut open connections, wake hung requests and wait for every thread."""
        with self._lock:
            server, thread = self._server, self._thread
            if server is None or thread is None:
                return
            server.close_connections()
            self._interrupt.set()
            server.shutdown()
            thread.join()
            self._server = self._thread = None

    def register_client(
        self, client_id: str | None = None, secret: str | None = None, *,
        intune_roles: tuple[str, ...] = (INTUNE_ROLE,), graph_roles: tuple[str, ...] = GRAPH_ROLES,
        secret_expires: float | None = None,
    ) -> tuple[str, str]:
        """Register an app with a secret (generated when not given); ``settings()`` then includes it."""
        client_id = client_id or str(uuid.uuid4())
        secret = secret or secrets.token_urlsafe(30)
        self.emulator.register_app(client_id, secret=secret, intune_roles=intune_roles, graph_roles=graph_roles,
                                   secret_expires=secret_expires)
        self._client = (client_id, secret)
        return client_id, secret

    def settings(self) -> dict[str, Any]:
        """The ``intune`` configuration that points a server at this emulator (keys as in IntuneConfig).

        Values are what ``load_config`` reads from YAML (``client_secret`` as an inline string). Graph
        discovery here names this host, so it is the one allowed service host.
        """
        values: dict[str, Any] = {
            "tenant": self.emulator.tenant,
            "authority": f"{self.url}/",
            "graph_resource_url": f"{self.url}/graph/",
            "graph_api_version": "1.0",
            "intune_resource_url": f"{self.url}/intune-api/",
            "ca_bundle": str(self.ca_bundle),
            "allowed_service_hosts": [HOST],
        }
        if self._client is not None:
            values["client_id"], values["client_secret"] = self._client
        return values

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
