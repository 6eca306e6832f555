"""The ``scep-server`` console script."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from scep_server import __version__
from scep_server.ca.authority import (
    CA_CERT,
    CertificateAuthority,
    ca_exists,
    check_keys_at_rest,
    import_ca,
    init_ca,
    load_ca,
    rotate_ra,
)
from scep_server.ca.keys.file import load_certificates, make_private_dir
from scep_server.config import ServerConfig, load_config
from scep_server.errors import ScepServerError
from scep_server.intune.client import IntuneClient
from scep_server.pki.names import printable
from scep_server.runtime import ca_passphrase
from scep_server.service.revocation import REASON_NAMES, RevocationService
from scep_server.store import (
    AlreadyRevoked,
    CertificateNotFound,
    CertificateRecord,
    CertStatus,
    Store,
    parse_serial_hex,
)

log = logging.getLogger("scep_server.cli")

Command = Callable[[ServerConfig, argparse.Namespace], int]
RA_EXPIRY_WARNING = timedelta(days=30)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    delegated = _delegated_command(argv)
    if delegated is not None:
        return delegated
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(os.environ.get("SCEP_SERVER_LOG_LEVEL", "INFO"))
    try:
        config = load_config(args.config)
        command: Command = args.func
        return command(config, args)
    except ScepServerError as exc:
        print(f"scep-server: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _delegated_command(argv: list[str]) -> int | None:
    """``simulate`` and ``intune-emulator`` own their options: hand them everything after their name."""
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        index += 2 if argv[index] == "--config" else 1
    if index >= len(argv) or argv[index] not in ("simulate", "intune-emulator"):
        return None
    rest = argv[index + 1:]
    configure_logging(os.environ.get("SCEP_SERVER_LOG_LEVEL", "INFO"))
    if argv[index] == "simulate":
        from scep_server.simulator.cli import run as run_simulator

        return run_simulator(rest)
    from scep_server.emulator.cli import run as run_emulator

    return run_emulator(rest)


def configure_logging(level: str) -> None:
    """stderr logging; control characters in records are escaped so that no record can forge a line."""
    from scep_server.logs import escape_logger_output

    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )
    escape_logger_output(logging.getLogger())
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scep-server", description="SCEP CA with Intune challenge validation")
    parser.add_argument("--version", action="version", version=f"scep-server {__version__}")
    parser.add_argument(
        "--config", default=os.environ.get("SCEP_SERVER_CONFIG"), help="YAML config file (env SCEP_SERVER_CONFIG)"
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    init = sub.add_parser("init", help="create the CA, the RA and the database")
    init.add_argument("--if-missing", action="store_true", help="do nothing when the CA already exists")
    init.set_defaults(func=cmd_init)

    imp = sub.add_parser("import-ca", help="use an existing CA certificate and key")
    imp.add_argument("--cert", required=True, type=Path, help="PEM CA certificate")
    imp.add_argument("--key", required=True, type=Path, help="PEM private key (PKCS#8 or traditional)")
    imp.add_argument("--key-password-env", help="environment variable holding the key's password")
    imp.add_argument("--chain", type=Path, help="PEM certificates above the CA (issuer first)")
    imp.set_defaults(func=cmd_import_ca)

    serve = sub.add_parser("serve", help="run the server (gunicorn, gthread workers)")
    serve.add_argument("--bind", default=os.environ.get("SCEP_SERVER_BIND", "127.0.0.1:8080"))
    serve.add_argument("--workers", type=int, default=int(os.environ.get("SCEP_SERVER_WORKERS", "2")))
    serve.add_argument("--threads", type=int, default=int(os.environ.get("SCEP_SERVER_THREADS", "4")))
    serve.add_argument("--init-if-missing", action="store_true", help="create a CA first when there is none")
    serve.add_argument(
        "--with-emulator", action="store_true",
        help="also run the Intune emulator where the intune settings point (development and demos)",
    )
    serve.set_defaults(func=cmd_serve)

    # These two parse their own options (see _delegated_command); listed here for --help.
    sub.add_parser("intune-emulator", help="run the Intune emulator (Entra ID + Graph + Intune)")

    sub.add_parser("simulate", help="enroll simulated Intune devices (TestMatrix rows) end to end")

    intune = sub.add_parser("intune", help="Intune integration").add_subparsers(required=True, metavar="ACTION")
    intune.add_parser("check", help="get tokens, discover the services, report what works").set_defaults(
        func=cmd_intune_check
    )
    intune.add_parser(
        "sync-revocations", help="download Intune's revocation requests, revoke, upload results (for cron)"
    ).set_defaults(func=cmd_intune_sync_revocations)

    certs = sub.add_parser("certs", help="issued certificates").add_subparsers(required=True, metavar="ACTION")
    listing = certs.add_parser("list", help="list issued certificates, newest first")
    listing.add_argument("--status", choices=[s.value for s in CertStatus])
    listing.add_argument("--profile")
    listing.add_argument("--limit", type=int, default=100)
    listing.set_defaults(func=cmd_certs_list)
    show = certs.add_parser("show", help="show one certificate")
    show.add_argument("serial", help="serial number in hex (as listed)")
    show.add_argument("--pem", action="store_true", help="print the certificate in PEM")
    show.set_defaults(func=cmd_certs_show)
    revoke = certs.add_parser("revoke", help="revoke a certificate (running servers follow within a second)")
    revoke.add_argument("serial", help="serial number in hex (as listed)")
    revoke.add_argument("--reason", default="unspecified", choices=REASON_NAMES)
    revoke.add_argument("--issuer", help="issuer DN (default: this CA)")
    revoke.set_defaults(func=cmd_certs_revoke)

    ca = sub.add_parser("ca", help="the CA").add_subparsers(required=True, metavar="ACTION")
    ca.add_parser("show", help="CA and RA details with the fingerprints Intune asks for").set_defaults(
        func=cmd_ca_show
    )
    ca.add_parser("rotate-ra", help="replace the RA key and certificate (restart the server after)").set_defaults(
        func=cmd_ca_rotate_ra
    )
    return parser


def cmd_init(config: ServerConfig, args: argparse.Namespace) -> int:
    if ca_exists(config.ca_dir):
        if not args.if_missing:
            print(f"scep-server: a CA already exists in {config.ca_dir}", file=sys.stderr)
            return 1
    else:
        init_ca(config.ca_dir, config.ca, ca_passphrase(config))
        print(f"created CA in {config.ca_dir}")
    _migrate(config)
    return cmd_ca_show(config, args)


def cmd_import_ca(config: ServerConfig, args: argparse.Namespace) -> int:
    # The imported key is stored re-encrypted with the CA passphrase, never decrypted (unless allowed).
    check_keys_at_rest(config, ca_passphrase(config), "import-ca")
    password = os.environ.get(args.key_password_env, "").encode() if args.key_password_env else None
    make_private_dir(Path(config.data_dir))
    import_ca(
        config.ca_dir,
        config.ca,
        cert_pem=args.cert.read_bytes(),
        key_pem=args.key.read_bytes(),
        key_password=password or None,
        chain_pem=args.chain.read_bytes() if args.chain else None,
        passphrase=ca_passphrase(config),
    )
    _migrate(config)
    print(f"imported CA into {config.ca_dir}")
    return cmd_ca_show(config, args)


def cmd_serve(config: ServerConfig, args: argparse.Namespace) -> int:
    from scep_server.serve import serve

    check_keys_at_rest(config, ca_passphrase(config), "serve")
    os.umask(0o077)  # whatever the server and its workers create (database, metrics, locks) stays private
    make_private_dir(Path(config.data_dir))
    if args.init_if_missing and not ca_exists(config.ca_dir):
        init_ca(config.ca_dir, config.ca, ca_passphrase(config))
        log.info("created CA in %s", config.ca_dir)
    # Fail before forking when the CA, the database or a profile is unusable, and let one process
    # migrate and create the OCSP responder certificate before the workers start.
    from scep_server.runtime import build_runtime

    runtime = build_runtime(config)
    warn_if_ra_expires_soon(runtime.ca)
    runtime.close()
    if args.with_emulator:
        config = start_emulator(config)
    serve(config, bind=args.bind, workers=args.workers, threads=args.threads)
    return 0


def cmd_intune_check(config: ServerConfig, args: argparse.Namespace) -> int:
    """Troubleshooting for admins: can we get tokens, find Intune's services, and would we call them?"""
    from scep_server.intune.check import check_services
    from scep_server.intune.transport import IntuneTransport

    if not config.intune.configured:
        print("scep-server: intune.tenant and intune.client_id are not set", file=sys.stderr)
        return 2
    transport = IntuneTransport(config.intune)
    try:
        checks = check_services(transport)
    finally:
        transport.close()
    print(f"Entra ID token and Graph discovery OK for tenant {config.intune.tenant}")
    for check in checks:
        print(f"  {check.line()}")
    unusable = [check for check in checks if check.required and not check.usable]
    for check in unusable:
        print(f"scep-server: {check.line()}", file=sys.stderr)
    return 1 if unusable else 0


def start_emulator(config: ServerConfig) -> ServerConfig:
    """An in-process emulator where config.intune points (served from the gunicorn master process).

    Returns the configuration to serve with: the emulator's generated client secret, never the configured one.
    """
    from scep_server.emulator.beside import start_beside

    return start_beside(config)[1]


def cmd_certs_list(config: ServerConfig, args: argparse.Namespace) -> int:
    with _store(config) as store:
        status = CertStatus(args.status) if args.status else None
        records = store.list_certificates(limit=args.limit, status=status, profile=args.profile)
    print(f"{'SERIAL':<42} {'STATUS':<8} {'NOT AFTER':<20} {'PROFILE':<12} SUBJECT")
    for record in records:
        print(
            f"{record.serial:x}".ljust(42),
            f"{record.status.value:<8}",
            f"{record.not_after:%Y-%m-%d %H:%M:%S}".ljust(20),
            f"{record.profile:<12}",
            printable(record.subject),  # a device chose it: control characters escaped
        )
    return 0


def cmd_certs_show(config: ServerConfig, args: argparse.Namespace) -> int:
    serial = _parse_serial(args.serial)
    with _store(config) as store:
        record = store.get_certificate(serial)
    if record is None:
        print(f"scep-server: no certificate with serial {args.serial}", file=sys.stderr)
        return 1
    if args.pem:
        from cryptography import x509

        print(x509.load_der_x509_certificate(record.der).public_bytes(Encoding.PEM).decode(), end="")
        return 0
    _print_record(record)
    return 0


def cmd_certs_revoke(config: ServerConfig, args: argparse.Namespace) -> int:
    serial = _parse_serial(args.serial)
    issuer = _ca_issuer(config)
    with _store(config) as store:
        try:
            record = RevocationService(store, issuer=issuer).revoke(serial, reason=args.reason, issuer=args.issuer)
        except CertificateNotFound:
            print(f"scep-server: no certificate with serial {args.serial}", file=sys.stderr)
            return 1
        except AlreadyRevoked as exc:
            revoked_at = exc.certificate.revoked_at
            when = f"{revoked_at:%Y-%m-%d %H:%M:%S} UTC" if revoked_at else "earlier"
            print(f"scep-server: certificate {args.serial} was already revoked ({when})", file=sys.stderr)
            return 1
    print(f"revoked {record.serial:x} ({args.reason})")
    return 0


def cmd_intune_sync_revocations(config: ServerConfig, args: argparse.Namespace) -> int:
    """One download → revoke → upload round, for cron-style use beside (or instead of) the server's worker."""
    from scep_server.runtime import revocation_sync

    if not config.intune.configured:
        print("scep-server: intune.tenant and intune.client_id are not set", file=sys.stderr)
        return 2
    client = IntuneClient(config.intune)
    try:
        with _store(config) as store:
            revocations = RevocationService(store, issuer=_ca_issuer(config))
            report = revocation_sync(config, store, client, revocations).run_safely()
    finally:
        client.close()
    if report is None:
        print("scep-server: no round ran (another one is running, or it failed: see the log)", file=sys.stderr)
        return 1
    print(f"downloaded {report.downloaded}, revoked {report.revoked}, uploaded {report.uploaded} results"
          f"{'' if report.upload_acknowledged else ' (not acknowledged: they will be sent again)'}")
    return 0 if report.upload_acknowledged else 1


def cmd_ca_show(config: ServerConfig, args: argparse.Namespace) -> int:
    ca = load_ca(config.ca_dir, config.ca, ca_passphrase(config))
    fingerprints = ca.fingerprints()
    rows = [
        ("name", ca.name),
        ("subject", ca.ca_cert.subject.rfc4514_string()),
        ("issuer", ca.ca_cert.issuer.rfc4514_string()),
        ("valid until", f"{ca.ca_cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"),
        ("SHA-1 fingerprint", fingerprints["sha1"]),
        ("SHA-256 fingerprint", fingerprints["sha256"]),
        ("RA subject", ca.ra_cert.subject.rfc4514_string()),
        ("RA valid until", f"{ca.ra_cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"),
        ("chain above CA", str(len(ca.chain))),
    ]
    for key, value in rows:
        print(f"{key + ':':<22}{value}")
    return 0


def cmd_ca_rotate_ra(config: ServerConfig, args: argparse.Namespace) -> int:
    passphrase = ca_passphrase(config)
    ca = rotate_ra(config.ca_dir, load_ca(config.ca_dir, config.ca, passphrase), config.ca, passphrase)
    print(f"new RA certificate valid until {ca.ra_cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    return 0


def warn_if_ra_expires_soon(ca: CertificateAuthority) -> None:
    """RA expiry is the classic SCEP outage: say so loudly, well before it happens."""
    if ca.ra_expires_within(RA_EXPIRY_WARNING):
        log.warning(
            "the RA certificate expires on %s: run `scep-server ca rotate-ra` and restart",
            ca.ra_cert.not_valid_after_utc.isoformat(),
        )


def _print_record(record: CertificateRecord) -> None:
    rows: list[tuple[str, Any]] = [
        ("serial", f"{record.serial:x}"),
        ("status", record.status.value),
        ("subject", record.subject),
        ("issuer", record.issuer),
        ("SANs", ", ".join(record.sans) or "-"),
        ("not before", record.not_before.isoformat()),
        ("not after", record.not_after.isoformat()),
        ("profile", record.profile),
        ("transaction", record.transaction_id or "-"),
        ("requester", record.requester_ip or "-"),
        ("issued at", record.issued_at.isoformat()),
        ("SHA-1", record.sha1_thumbprint),
        ("SHA-256", record.sha256_thumbprint),
    ]
    if record.revoked_at is not None:
        rows += [("revoked at", record.revoked_at.isoformat()), ("reason", record.revocation_reason)]
    for key, value in rows:
        print(f"{key + ':':<14}{printable(str(value))}")  # names, SANs, transaction: control characters escaped


def _ca_issuer(config: ServerConfig) -> str:
    """The CA's subject as the store keys certificates, without loading (or decrypting) its key."""
    return load_certificates(config.ca_dir / CA_CERT)[0].subject.rfc4514_string()


def _parse_serial(text: str) -> int:
    try:
        return parse_serial_hex(text)
    except ValueError:
        raise SystemExit(f"scep-server: {text!r} is not a hexadecimal serial number") from None


def _migrate(config: ServerConfig) -> None:
    make_private_dir(Path(config.data_dir))
    with _store(config) as store:
        store.migrate()


class _store:  # noqa: N801 - used as a context manager, reads like a function
    def __init__(self, config: ServerConfig) -> None:
        self._url = config.effective_database_url

    def __enter__(self) -> Store:
        self._store = Store.open(self._url)
        return self._store

    def __exit__(self, *exc: object) -> None:
        self._store.close()


if __name__ == "__main__":
    raise SystemExit(main())
