"""``serve``: check what the server needs before forking, then run gunicorn (with the emulator beside it)."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from scep_server.ca.authority import CertificateAuthority, ca_exists, init_ca
from scep_server.ca.keys.pkcs11 import close_sessions as close_token_sessions
from scep_server.challenge import validator_class
from scep_server.cli.banner import Banner, base_url, print_banner
from scep_server.cli.beside import EmulatorProcess, start_beside
from scep_server.cli.common import Subcommands
from scep_server.cli.preflight import require_startup
from scep_server.config import ServerConfig
from scep_server.config.parsing import Problems, shown
from scep_server.errors import ConfigError
from scep_server.files import make_private_dir
from scep_server.runtime import build_runtime, ca_passphrase

__all__ = ["ServeOptions", "cmd_serve", "default_threads", "default_workers", "register", "serve_options"]

log = logging.getLogger("scep_server.cli")
RA_EXPIRY_WARNING = timedelta(days=30)
# Static enrollments are CPU work: more threads than this only queue on the GIL. An Intune enrollment
# spends most of its time waiting for validateRequest and successNotification, each in a thread of its
# own, so a worker needs as many threads as the enrollments it should keep in flight.
CPU_THREADS = 4
WAITING_THREADS = 32
MAX_DEFAULT_WORKERS = 8
MAX_COUNT = 1024  # workers or threads: more is a typo, not a configuration
DEFAULT_BIND = "127.0.0.1:8080"
BIND_ENV, WORKERS_ENV, THREADS_ENV = "SCEP_SERVER_BIND", "SCEP_SERVER_WORKERS", "SCEP_SERVER_THREADS"


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """Where gunicorn listens and how many processes and threads it runs (None: the defaults)."""

    bind: str = DEFAULT_BIND
    workers: int | None = None
    threads: int | None = None


def default_workers() -> int:
    """One worker per CPU this process may run on, at least 2 (a crashed worker is replaced while the
    other serves) and at most ``MAX_DEFAULT_WORKERS`` (a container often sees the host's CPUs)."""
    return max(2, min(usable_cpus(), MAX_DEFAULT_WORKERS))


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, where the system has one), else all of them."""
    affinity = getattr(os, "sched_getaffinity", None)  # Linux only
    if affinity is not None:
        return len(affinity(0))
    return os.cpu_count() or 1


def default_threads(config: ServerConfig) -> int:
    """``WAITING_THREADS`` when some profile's validator waits on a remote service, else ``CPU_THREADS``."""
    remote = any(validator_class(profile.challenge.type).may_be_unavailable for profile in config.profiles)
    return WAITING_THREADS if remote else CPU_THREADS


def register(sub: Subcommands) -> None:
    serve = sub.add_parser("serve", help="run the server (gunicorn, gthread workers)")
    serve.add_argument("--bind", help=f"HOST:PORT or unix:PATH (default: {BIND_ENV}, else {DEFAULT_BIND})")
    serve.add_argument("--workers", type=_count_argument,
                       help=f"gunicorn worker processes (default: {WORKERS_ENV}, else one per CPU, 2 to 8)")
    serve.add_argument("--threads", type=_count_argument,
                       help=f"threads per worker (default: {THREADS_ENV}, else {CPU_THREADS}, or {WAITING_THREADS} "
                            "when a profile's validator calls a remote service such as Intune)")
    serve.add_argument("--init-if-missing", action="store_true", help="create a CA first when there is none")
    serve.add_argument(
        "--with-emulator", action="store_true",
        help="also run the Intune emulator where the intune settings point (development and demos)",
    )
    serve.set_defaults(func=cmd_serve, environment_check=serve_options)


def serve_options(args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None) -> ServeOptions:
    """The options ``serve`` runs with: its arguments, else ``SCEP_SERVER_BIND``/``_WORKERS``/``_THREADS``.
    ConfigError names each unusable one."""
    env = os.environ if env is None else env
    problems = Problems()
    bind = getattr(args, "bind", None) or env.get(BIND_ENV) or DEFAULT_BIND
    label = "--bind" if getattr(args, "bind", None) else BIND_ENV
    with problems.collecting():
        _check_bind(bind, label)
    workers = getattr(args, "workers", None) or problems.attempt(lambda: _count_env(env, WORKERS_ENV))
    threads = getattr(args, "threads", None) or problems.attempt(lambda: _count_env(env, THREADS_ENV))
    problems.raise_if_any()
    return ServeOptions(bind, workers, threads)


def _count_env(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name)
    if text is None or not text.strip():
        return None
    value = text.strip()
    if not value.isdecimal() or not 1 <= int(value) <= MAX_COUNT:
        raise ConfigError(f"{name} must be a whole number from 1 to {MAX_COUNT}, not {shown(text)}")
    return int(value)


def _count_argument(text: str) -> int:
    if not text.isdecimal() or not 1 <= int(text) <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to {MAX_COUNT}, not {text!r}")
    return int(text)


def _check_bind(bind: str, label: str) -> None:
    if bind.startswith(("unix:", "fd://")):
        return
    host, _, port = bind.rpartition(":")
    if not host or not port.isdecimal() or int(port) > 65535:
        raise ConfigError(f"{label} must be HOST:PORT (a port up to 65535) or unix:PATH, not {shown(bind)}")


def cmd_serve(config: ServerConfig, args: argparse.Namespace) -> int:
    options = serve_options(args)
    # Everything that can be wrong is reported before a key is written or the process is changed.
    require_startup(config, "serve", with_emulator=args.with_emulator, ca_required=not args.init_if_missing)
    os.umask(0o077)  # whatever the server and its workers create (database, metrics, locks) stays private
    make_private_dir(Path(config.data_dir))
    if args.init_if_missing and not ca_exists(config.ca_dir, config.ca.keys):
        init_ca(config.ca_dir, config.ca, ca_passphrase(config))
        log.info("created CA in %s", config.ca_dir)
    with _emulator_beside(config, args.with_emulator) as (served, emulator):
        fingerprints = prepare(served)
        print_banner(Banner(base_url(options.bind), served, fingerprints, emulator))
        _serve(served, options)
    return 0


def prepare(config: ServerConfig) -> dict[str, str]:
    """Fail before forking when the CA, the database or a profile is unusable, and let one process migrate
    and create the OCSP responder certificate before the workers start; the CA's fingerprints."""
    runtime = build_runtime(config)
    try:
        warn_if_ra_expires_soon(runtime.ca)
        return runtime.ca.fingerprints()
    finally:
        runtime.close()
        # The workers open their own token sessions: none of the master's may cross the fork (a PKCS#11
        # module is not defined to survive one).
        close_token_sessions()


@contextmanager
def _emulator_beside(config: ServerConfig, wanted: bool) -> Iterator[tuple[ServerConfig, EmulatorProcess | None]]:
    """The configuration to serve with, and the emulator started for it (stopped afterwards), if ``wanted``."""
    if not wanted:
        yield config, None
        return
    emulator, served = start_beside(config)
    try:
        yield served, emulator
    finally:
        emulator.stop()


def warn_if_ra_expires_soon(ca: CertificateAuthority) -> None:
    """RA expiry is the classic SCEP outage: say so loudly, well before it happens."""
    if ca.ra_expires_within(RA_EXPIRY_WARNING):
        log.warning(
            "the RA certificate expires on %s: the server renews it in its last ca.ra_renew_days days, or run "
            "`scep-server ca rotate-ra` (no restart needed)",
            ca.ra_cert.not_valid_after_utc.isoformat(),
        )


def _serve(config: ServerConfig, options: ServeOptions) -> None:
    from scep_server.serve import serve  # gunicorn: only for this command

    workers = options.workers or default_workers()
    threads = options.threads or default_threads(config)
    log.info("serving with %d workers x %d threads", workers, threads)
    serve(config, bind=options.bind, workers=workers, threads=threads)
