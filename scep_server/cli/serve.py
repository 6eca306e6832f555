"""``serve``: check what the server needs before forking, then run gunicorn (with the emulator beside it)."""

from __future__ import annotations

import argparse
import logging
import os
from datetime import timedelta
from pathlib import Path

from scep_server.ca.authority import CertificateAuthority, ca_exists, check_keys_at_rest, init_ca
from scep_server.challenge import validator_class
from scep_server.cli.beside import start_beside
from scep_server.cli.common import Subcommands
from scep_server.config import ServerConfig
from scep_server.files import make_private_dir
from scep_server.runtime import build_runtime, ca_passphrase

log = logging.getLogger("scep_server.cli")
RA_EXPIRY_WARNING = timedelta(days=30)
# Static enrollments are CPU work: more threads than this only queue on the GIL. An Intune enrollment
# spends most of its time waiting for validateRequest and successNotification, each in a thread of its
# own, so a worker needs as many threads as the enrollments it should keep in flight.
CPU_THREADS = 4
WAITING_THREADS = 32
MAX_DEFAULT_WORKERS = 8


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return None if value is None else int(value)


def default_workers() -> int:
    """One worker per CPU this process may run on, at least 2 (a crashed worker is replaced while the
    other serves) and at most ``MAX_DEFAULT_WORKERS`` (a container often sees the host's CPUs)."""
    return max(2, min(len(os.sched_getaffinity(0)), MAX_DEFAULT_WORKERS))


def default_threads(config: ServerConfig) -> int:
    """``WAITING_THREADS`` when some profile's validator waits on a remote service, else ``CPU_THREADS``."""
    remote = any(validator_class(profile.challenge.type).may_be_unavailable for profile in config.profiles)
    return WAITING_THREADS if remote else CPU_THREADS


def register(sub: Subcommands) -> None:
    serve = sub.add_parser("serve", help="run the server (gunicorn, gthread workers)")
    serve.add_argument("--bind", default=os.environ.get("SCEP_SERVER_BIND", "127.0.0.1:8080"))
    serve.add_argument("--workers", type=int, default=_env_int("SCEP_SERVER_WORKERS"),
                       help="gunicorn worker processes (default: one per CPU, 2 to 8)")
    serve.add_argument("--threads", type=int, default=_env_int("SCEP_SERVER_THREADS"),
                       help=f"threads per worker (default: {CPU_THREADS}, or {WAITING_THREADS} when a profile's "
                            "validator calls a remote service such as Intune)")
    serve.add_argument("--init-if-missing", action="store_true", help="create a CA first when there is none")
    serve.add_argument(
        "--with-emulator", action="store_true",
        help="also run the Intune emulator where the intune settings point (development and demos)",
    )
    serve.set_defaults(func=cmd_serve)


def cmd_serve(config: ServerConfig, args: argparse.Namespace) -> int:
    check_keys_at_rest(config, ca_passphrase(config), "serve")
    os.umask(0o077)  # whatever the server and its workers create (database, metrics, locks) stays private
    make_private_dir(Path(config.data_dir))
    if args.init_if_missing and not ca_exists(config.ca_dir):
        init_ca(config.ca_dir, config.ca, ca_passphrase(config))
        log.info("created CA in %s", config.ca_dir)
    # Fail before forking when the CA, the database or a profile is unusable, and let one process
    # migrate and create the OCSP responder certificate before the workers start.
    runtime = build_runtime(config)
    warn_if_ra_expires_soon(runtime.ca)
    runtime.close()
    if not args.with_emulator:
        _serve(config, args)
        return 0
    emulator, served = start_beside(config)
    try:
        _serve(served, args)
    finally:
        emulator.stop()
    return 0


def warn_if_ra_expires_soon(ca: CertificateAuthority) -> None:
    """RA expiry is the classic SCEP outage: say so loudly, well before it happens."""
    if ca.ra_expires_within(RA_EXPIRY_WARNING):
        log.warning(
            "the RA certificate expires on %s: run `scep-server ca rotate-ra` and restart",
            ca.ra_cert.not_valid_after_utc.isoformat(),
        )


def _serve(config: ServerConfig, args: argparse.Namespace) -> None:
    from scep_server.serve import serve  # gunicorn: only for this command

    workers = args.workers or default_workers()
    threads = args.threads or default_threads(config)
    log.info("serving with %d workers x %d threads", workers, threads)
    serve(config, bind=args.bind, workers=workers, threads=threads)
