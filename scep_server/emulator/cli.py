"""``scep-intune-emulator``: run the emulator in the foreground until SIGTERM or SIGINT.

Prints the ``intune:`` configuration a server needs to use it (never the client secret: the operator
gave it, from ``--client-secret`` or, better, the ``AAD_APP_KEY`` environment variable, the same name
the server reads). Without ``--client-id`` no app is registered; register one with ``POST /admin/apps``.
The admin API always needs a bearer token: ``--admin-token`` (or ``INTUNE_EMULATOR_ADMIN_TOKEN``), else
one generated at start and printed. ``--stop-with-stdin`` also stops it when standard input closes: a
process that starts the emulator beside itself holds the other end, so the emulator cannot outlive it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from scep_server.emulator.server import EmulatorServer
from scep_server.emulator.state import IntuneEmulator
from scep_server.pki.names import printable

PROG = "scep-intune-emulator"
SECRET_ENV = "AAD_APP_KEY"
ADMIN_TOKEN_ENV = "INTUNE_EMULATOR_ADMIN_TOKEN"
LOG_LEVEL_ENV = "SCEP_SERVER_LOG_LEVEL"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LISTENING = "Intune emulator listening on "  # the banner's first line: the emulator is ready


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: stderr logging at ``SCEP_SERVER_LOG_LEVEL`` (INFO), then ``run``."""
    raw = os.environ.get(LOG_LEVEL_ENV) or "INFO"  # empty: unset
    if raw.upper() not in LOG_LEVELS:
        print(f"{PROG}: {LOG_LEVEL_ENV} must be one of {', '.join(LOG_LEVELS)}, not {raw!r}", file=sys.stderr)
        return 2
    configure_logging(raw)
    return run(None if argv is None else list(argv))


def run(argv: list[str] | None = None) -> int:
    """Parse ``argv``, serve until SIGTERM/SIGINT, return the exit status."""
    args = _parser().parse_args(argv)
    secret = args.client_secret or os.environ.get(SECRET_ENV)
    if args.client_id and not secret:
        print(f"{PROG}: --client-id needs --client-secret or {SECRET_ENV}", file=sys.stderr)
        return 2
    given_token = args.admin_token or os.environ.get(ADMIN_TOKEN_ENV)
    server = EmulatorServer(IntuneEmulator(tenant=args.tenant), port=args.port, state_dir=args.state_dir,
                            admin_token=given_token)
    if args.client_id:
        server.register_client(args.client_id, secret)
    try:
        server.start()
    except OSError as exc:
        print(f"{PROG}: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    _serve_until_stopped(server, show_token=given_token is None, stop_with_stdin=args.stop_with_stdin)
    _say(f"{PROG}: stopped")
    return 0


def _say(text: str) -> None:
    """Print for whoever started the emulator; once nobody reads the pipe (the server it ran beside was
    killed, say), print nothing more, and let the flush at exit not fail again (the recipe of the signal
    module's note on SIGPIPE)."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _serve_until_stopped(server: EmulatorServer, *, show_token: bool, stop_with_stdin: bool) -> None:
    stop = threading.Event()
    previous = {sig: signal.signal(sig, _setter(stop)) for sig in (signal.SIGTERM, signal.SIGINT)}
    if stop_with_stdin:
        threading.Thread(target=_set_at_eof, args=(sys.stdin.fileno(), stop), name="stdin-watch", daemon=True).start()
    try:
        _say(describe(server, show_token=show_token))
        stop.wait()
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def describe(server: EmulatorServer, *, show_token: bool) -> str:
    """What an operator needs: the URL, the admin token when it was generated, the server configuration.

    Never the client secret; the admin token only when the operator did not choose it (and so cannot
    know it otherwise).
    """
    settings = {k: v for k, v in server.settings().items() if k != "client_secret"}
    token = f"generated token {server.admin_token}" if show_token else f"the token given ({ADMIN_TOKEN_ENV})"
    lines = [f"{LISTENING}{server.url} (tenant {server.emulator.tenant})",
             f"admin API: {server.url}/admin/ (Authorization: Bearer <token>; {token})",
             "# scep-server configuration:", "intune:"]
    lines += [f"  {key}: {json.dumps(value)}" for key, value in settings.items()]
    if "client_id" in settings:
        lines.append(f"  client_secret: {{env: {SECRET_ENV}}}")
    return "\n".join(lines)


def _set_at_eof(fd: int, stop: threading.Event) -> None:
    # The descriptor, not sys.stdin: a thread blocked in a buffered read holds its lock, and the
    # interpreter aborts at exit when it cannot take that lock.
    while os.read(fd, 4096):
        pass
    stop.set()


def _setter(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return handler


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG,
                                     description="Emulate Entra ID, Graph and Intune's third-party CA APIs over HTTPS")
    parser.add_argument("--port", type=int, default=8443, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--state-dir", type=Path, default=Path("var/emulator"),
                        help="where the emulator's TLS CA (ca.pem) and server certificate live")
    parser.add_argument("--tenant", default="contoso.onmicrosoft.com", help="tenant name (or GUID)")
    parser.add_argument("--client-id", help="register an app with this client id")
    parser.add_argument("--client-secret", help=f"its secret (prefer the {SECRET_ENV} environment variable)")
    parser.add_argument("--admin-token",
                        help=f"bearer token of /admin/ (or {ADMIN_TOKEN_ENV}; default: generated and printed)")
    parser.add_argument("--stop-with-stdin", action="store_true",
                        help="also stop when standard input closes (for a process that runs the emulator beside it)")
    return parser


class _PrintableFormatter(logging.Formatter):
    """One record, one line: a request path cannot end the line or drive the terminal of whoever reads it."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
