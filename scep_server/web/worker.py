"""gthread workers whose main loop reads each request before any thread sees it.

Stock gthread hands a connection to a thread as soon as its first byte arrives, and the thread
then blocks reading the rest: a hundred clients sending their headers slowly hold every thread,
and the server stops answering. Here the worker's main loop (its selector) reads the request head,
and a body of known length, non-blockingly into memory, under a deadline per request. A thread only
gets a request that is complete, which gunicorn's parser then reads from memory. A slow client
costs a socket and a buffer until its deadline, never a thread.

Requests over the limits are answered from the main loop without running the parser: 414 for a
long request line, 431 for header fields, 413 for a body, 408 when the deadline passes. Connections
close with a half-close and a bounded drain in the main loop, not a blocking linger.

TLS, HTTP/2 cleartext and the PROXY protocol (none of which ``scep-server serve`` configures) need
the socket itself before any request byte: with them the worker reads as stock gthread does, with
a socket timeout as the only bound.
"""

from __future__ import annotations

import errno
import selectors
import socket
import time
from functools import partial
from typing import Any, ClassVar, cast

from gunicorn.workers.gthread import TConn, ThreadWorker

from scep_server.config import ServerConfig
from scep_server.web.request_buffer import TIMED_OUT, Limits, Refusal, RequestBuffer

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
READ_SIZE = 64 * 1024
DRAIN_SECONDS = 2.0  # as gunicorn's own graceful close
DRAIN_BYTES = 1024 * 1024  # enough for a client to get its 414 before a reset, even mid-line
_SWEEP_INTERVAL = 0.25


def request_limits(config: ServerConfig) -> Limits:
    """What each request may hold; its body as much as the application accepts (``max_body_bytes``)."""
    limits = config.limits
    return Limits(
        request_line_bytes=limits.request_line_bytes, header_fields=limits.header_fields,
        header_field_bytes=limits.header_field_bytes, body_bytes=config.max_body_bytes,
    )  # fmt: skip


class BufferedConn(TConn):  # type: ignore[misc]
    """A connection whose request bytes may have been read ahead by the worker's main loop."""

    def __init__(self, cfg: Any, sock: socket.socket, client: Any, server: Any, *, io_timeout: float) -> None:
        super().__init__(cfg, sock, client, server)
        self.io_timeout = io_timeout
        self.request: RequestBuffer | None = None  # while the main loop reads a request
        self.deadline = 0.0  # of the request's head or body being read, or of the drain before closing
        self.reading_body = False
        self.drained = 0
        self.handoff = b""  # a complete request for the parser
        self.on_graceful_close: Any = None  # the worker's non-blocking close, when it has one

    def init(self) -> None:
        """Runs in the thread: bound every socket operation, give the parser what was read ahead."""
        self.sock.settimeout(self.io_timeout)  # the TLS handshake included
        super().init()
        self.sock.settimeout(self.io_timeout)
        if self.handoff:
            self.parser.unreader.unread(self.handoff)
            self.handoff = b""

    def close(self, graceful: bool = False) -> None:
        if graceful and self.on_graceful_close is not None:
            self.on_graceful_close(self)
        else:
            super().close(graceful)


class BufferingThreadWorker(ThreadWorker):  # type: ignore[misc]
    """A gthread worker that reads every request (keep-alive ones included) in its main loop first."""

    limits: ClassVar[Limits] = request_limits(ServerConfig())
    header_timeout: ClassVar[float] = float(ServerConfig().limits.header_timeout_seconds)
    body_timeout: ClassVar[float] = float(ServerConfig().limits.body_timeout_seconds)

    @classmethod
    def configured(cls, config: ServerConfig) -> type[BufferingThreadWorker]:
        """A subclass with the limits of ``config``: gunicorn instantiates the worker class itself."""
        attrs = {
            "limits": request_limits(config),
            "header_timeout": float(config.limits.header_timeout_seconds),
            "body_timeout": float(config.limits.body_timeout_seconds),
        }
        return cast("type[BufferingThreadWorker]", type(cls.__name__, (cls,), attrs))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        plain = cfg.http2_cleartext == "off" and getattr(cfg, "proxy_protocol", "off") == "off"
        self.buffering = plain and not cfg.is_ssl
        self.reading: set[BufferedConn] = set()
        self.draining: set[BufferedConn] = set()
        self._scratch = bytearray(READ_SIZE)
        self._next_sweep = 0.0

    # -- accepting and dispatching

    def accept(self, listener: socket.socket) -> None:
        try:
            sock, client = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = BufferedConn(self.cfg, sock, client, listener.getsockname(), io_timeout=self.body_timeout)
        if self.buffering:
            conn.on_graceful_close = self._close_gracefully
        self.enqueue_req(conn)

    def enqueue_req(self, conn: TConn) -> None:
        """Every path to a thread (new, kept-alive and pipelined requests) reads the request first."""
        if self.buffering and isinstance(conn, BufferedConn):
            self._start_reading(conn)
        else:
            super().enqueue_req(conn)

    def _start_reading(self, conn: BufferedConn) -> None:
        # A pipelined request may have been read ahead by gunicorn's parser already.
        ahead = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.sock.setblocking(False)
        conn.request = RequestBuffer(self.limits)
        conn.deadline = time.monotonic() + self.header_timeout
        conn.reading_body = False
        self.reading.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        if ahead:
            self._progress(conn, conn.request.feed(ahead))

    def _on_readable(self, conn: BufferedConn, _sock: socket.socket) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._stop_reading(conn)
            self._close(conn)
            return
        assert conn.request is not None
        self._progress(conn, conn.request.feed(data))

    def _progress(self, conn: BufferedConn, verdict: Refusal | bool | None) -> None:
        request = conn.request
        assert request is not None
        if isinstance(verdict, Refusal):
            self._refuse(conn, verdict)
        elif verdict:
            self._stop_reading(conn)
            conn.handoff, conn.data_ready = bytes(request.data), True
            super().enqueue_req(conn)
        elif request.head_done and not conn.reading_body:
            conn.reading_body = True
            conn.deadline = time.monotonic() + self.body_timeout
            if request.wants_continue:
                self._send_quietly(conn, CONTINUE)

    def _stop_reading(self, conn: BufferedConn) -> None:
        self.reading.discard(conn)
        conn.request = None
        self._unregister(conn)

    # -- refusing and closing, without blocking the main loop

    def _refuse(self, conn: BufferedConn, refusal: Refusal) -> None:
        request = conn.request
        received = len(request.data) if request is not None else 0
        self._stop_reading(conn)
        log = self.log.info if refusal.status == 408 else self.log.warning
        log("refused a request from %s: %d %s (%d bytes received)", _peer(conn), refusal.status, refusal.reason,
            received)
        self._send_quietly(conn, refusal.response())
        self.nr_conns -= 1
        self._close_gracefully(conn)

    def _close_gracefully(self, conn: BufferedConn) -> None:
        """Half-close, then discard what the client still sends for a while so it reads the answer, not a reset.

        gunicorn has already stopped counting the connection: it counts again while it drains.
        """
        self.nr_conns += 1
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.sock.setblocking(False)
        conn.deadline = time.monotonic() + DRAIN_SECONDS
        conn.drained = 0
        self.draining.add(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_drain_readable, conn))

    def _on_drain_readable(self, conn: BufferedConn, _sock: socket.socket) -> None:
        for _ in range(16):  # a fair share of the loop per event
            try:
                count = conn.sock.recv_into(self._scratch)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                count = 0
            conn.drained += count
            if not count or conn.drained >= DRAIN_BYTES:
                self._finish_drain(conn)
                return

    def _finish_drain(self, conn: BufferedConn) -> None:
        self.draining.discard(conn)
        self._unregister(conn)
        self._close(conn)

    def _close(self, conn: BufferedConn) -> None:
        self.nr_conns -= 1
        conn.on_graceful_close = None
        conn.close()

    def _unregister(self, conn: BufferedConn) -> None:
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    @staticmethod
    def _send_quietly(conn: BufferedConn, data: bytes) -> None:
        """A small answer on a socket that has just been read from; if it does not fit, the close says it all."""
        try:
            conn.sock.send(data)
        except OSError:
            pass

    # -- deadlines

    def murder_pending(self) -> None:
        """gunicorn calls this on every turn of the main loop: the requests and drains past their deadline end."""
        super().murder_pending()
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + _SWEEP_INTERVAL
        for conn in [c for c in self.reading if c.deadline <= now or not self.alive]:
            request = conn.request
            if request is not None and request.data:
                if conn.deadline <= now:
                    self._refuse(conn, TIMED_OUT)
            else:  # nothing sent yet: a stopping worker does not wait for it
                self._stop_reading(conn)
                self._close(conn)
        for conn in [c for c in self.draining if c.deadline <= now]:
            self._finish_drain(conn)

    # -- in the threads

    def handle_request(self, req: Any, conn: TConn) -> bool:
        """A client that does not read its response in time loses the connection, not the log a traceback."""
        try:
            return bool(super().handle_request(req, conn))
        except TimeoutError:
            self.log.info("closed the connection from %s: the response could not be written in time", _peer(conn))
            raise StopIteration from None


def _peer(conn: TConn) -> str:
    client = conn.client
    return str(client[0]) if isinstance(client, tuple) and client else str(client)
