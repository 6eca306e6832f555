"""``init``, ``import-ca``, ``ca show|rotate-ra|verify`` and ``ca rollover stage|activate|status``: the CA,
its RA, the database they start with, and the CA that follows it (RFC 8894 §3.5.2: staged, it is what
GetNextCACert hands out; activated, it issues).
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from scep_server.ca.authority import (
    CA_CERT,
    CA_KEY,
    CertificateAuthority,
    ca_exists,
    certificate_fingerprints,
    check_keys_at_rest,
    generation_namespace,
    import_ca,
    init_ca,
    key_backend,
    load_ca,
    rotate_ra,
)
from scep_server.ca.certfiles import load_single_certificate
from scep_server.ca.generations import (
    CROSS_CERT,
    Generation,
    GenerationRecord,
    GenerationState,
    ImportedCa,
    activate,
    cross_signed,
    load_generations,
    read_state,
    stage_next,
)
from scep_server.ca.responder import OCSP_KEY
from scep_server.ca.verify import Finding, Level, passed, ra_decrypts_until, verify_authority
from scep_server.cli.audit import audit_cli_change
from scep_server.cli.common import Subcommands, fail, migrate
from scep_server.cli.output import print_fields
from scep_server.cli.preflight import require_startup
from scep_server.config import ServerConfig
from scep_server.errors import CAError
from scep_server.files import make_private_dir, read_file
from scep_server.pki.names import parse_name, printable
from scep_server.runtime import ca_passphrase
from scep_server.store import AuditAction

ROTATE_RA_HELP = (
    "replace the RA key and certificate; a running server takes the new RA within seconds, and the previous "
    "RA keeps decrypting requests encrypted to it for ca.ra_grace_days"
)
ROLLOVER_HELP = "replace the CA: stage the next one (GetNextCACert hands it out), then activate it"
INTUNE_BEFORE_ACTIVATION = (
    "Intune: before activating it, deploy this CA certificate (these fingerprints) in a new trusted certificate profile"
)
INTUNE_ROOT_BEFORE_ACTIVATION = (
    "Intune: before activating it, make sure a trusted certificate profile carries the root above (its fingerprints)"
)


def register(sub: Subcommands) -> None:
    init = sub.add_parser("init", help="create the CA, the RA and the database")
    init.add_argument("--if-missing", action="store_true", help="do nothing when the CA already exists")
    init.set_defaults(func=cmd_init)

    imp = sub.add_parser("import-ca", help="use an existing CA certificate and key")
    imp.add_argument("--cert", required=True, type=Path, help="PEM CA certificate")
    imp.add_argument("--key", required=True, type=Path, help="PEM private key (PKCS#8 or traditional)")
    imp.add_argument("--key-password-env", help="environment variable holding the key's password")
    imp.add_argument("--chain", type=Path, help="PEM certificates above the CA (issuer first)")
    imp.set_defaults(func=cmd_import_ca)

    ca = sub.add_parser("ca", help="the CA: show, verify, rotate the RA, roll over to a new CA").add_subparsers(
        required=True, metavar="ACTION"
    )
    ca.add_parser("show", help="CA and RA details with the fingerprints Intune asks for").set_defaults(
        func=cmd_ca_show
    )
    ca.add_parser("rotate-ra", help=ROTATE_RA_HELP).set_defaults(func=cmd_ca_rotate_ra)
    verify = ca.add_parser("verify", help="check that the CA's keys, certificates and chain fit together and are valid")
    verify.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    verify.set_defaults(func=cmd_ca_verify)
    _register_rollover(ca)


def _register_rollover(ca: Subcommands) -> None:
    rollover = ca.add_parser("rollover", help=ROLLOVER_HELP).add_subparsers(required=True, metavar="STEP")
    stage = rollover.add_parser("stage", help="create or import the next CA; it issues once activated")
    stage.add_argument("--subject", help="the next CA's subject (RFC 4514); by default the active CA's with "
                                         "G<n> after its common name")
    stage.add_argument("--cross-sign", action="store_true",
                       help="have the active CA certify the next CA's key too, for clients that trust only it")
    stage.add_argument("--cert", type=Path, help="import this PEM CA certificate as the next CA (with --key)")
    stage.add_argument("--key", type=Path, help="the imported CA's PEM private key")
    stage.add_argument("--key-password-env", help="environment variable holding the imported key's password")
    stage.add_argument("--chain", type=Path, help="PEM certificates above the imported CA")
    stage.set_defaults(func=cmd_rollover_stage)
    activation = rollover.add_parser("activate", help="make the staged CA the one that issues, now or at --at")
    activation.add_argument("--at", metavar="TIME", help="ISO 8601 time with a zone, like 2026-05-01T08:00:00+02:00")
    activation.set_defaults(func=cmd_rollover_activate)
    rollover.add_parser("status", help="every CA generation, its role, and the next CA's fingerprints").set_defaults(
        func=cmd_rollover_status
    )


def cmd_init(config: ServerConfig, args: argparse.Namespace) -> int:
    exists = ca_exists(config.ca_dir, config.ca.keys)
    if exists and not args.if_missing:
        return fail(f"a CA already exists in {config.ca_dir}")
    # What `serve` would refuse is refused before a key is written (an unencrypted CA, a missing secret).
    require_startup(config, "init")
    if not exists:
        init_ca(config.ca_dir, config.ca, ca_passphrase(config))
        print(f"created CA in {config.ca_dir}")
    migrate(config)
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
    migrate(config)
    print(f"imported CA into {config.ca_dir}")
    return cmd_ca_show(config, args)


def cmd_ca_show(config: ServerConfig, args: argparse.Namespace) -> int:
    """The issuing CA: after ``ca rollover activate``, the generation that issues now."""
    generation = load_generations(config.ca_dir, config.ca, ca_passphrase(config)).active
    ca = generation.ca
    fingerprints = ca.fingerprints()
    print_fields([
        ("name", ca.name),
        ("generation", generation.label),
        ("subject", ca.ca_cert.subject.rfc4514_string()),
        ("issuer", ca.ca_cert.issuer.rfc4514_string()),
        ("valid until", f"{ca.ca_cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"),
        ("SHA-1 fingerprint", fingerprints["sha1"]),
        ("SHA-256 fingerprint", fingerprints["sha256"]),
        ("RA subject", ca.ra_cert.subject.rfc4514_string()),
        ("RA serial", f"{ca.ra_cert.serial_number:x}"),
        ("RA valid until", _when(ca.ra_cert.not_valid_after_utc)),
        *_previous_ra_fields(ca),
        ("chain above CA", len(ca.chain)),
        *_root_fields(ca),
        *_key_locations(config, generation),
    ], width=22)
    return 0


def _root_fields(ca: CertificateAuthority) -> list[tuple[str, object]]:
    """The root of an imported chain: Intune's trusted-certificate profile carries the root, not the CA."""
    if not ca.chain:
        return []
    fingerprints = certificate_fingerprints(ca.root)
    return [("root subject", ca.root.subject.rfc4514_string()), ("root SHA-1", fingerprints["sha1"]),
            ("root SHA-256", fingerprints["sha256"])]


def _previous_ra_fields(ca: CertificateAuthority) -> list[tuple[str, object]]:
    """The replaced RAs still in their grace period: devices that cached one still reach the server."""
    return [
        ("previous RA", f"{ra.cert.subject.rfc4514_string()} serial {ra.serial:x}, "
                        f"decrypts until {_when(ra_decrypts_until(ra))}")
        for ra in ca.ra_keyring.previous
    ]


def _key_locations(config: ServerConfig, generation: Generation) -> list[tuple[str, object]]:
    """Where each key lives: a file, or a token object (``pkcs11:...``); the RA's is the keyring's current."""
    ca = generation.ca
    keys = key_backend(generation.directory, None, config.ca.keys, namespace=generation_namespace(ca.label))
    names = (("CA", CA_KEY), ("RA", ca.ra_keyring.current.files.key), ("OCSP", OCSP_KEY))
    return [(f"{label} key", keys.describe(name)) for label, name in names]


def cmd_ca_rotate_ra(config: ServerConfig, args: argparse.Namespace) -> int:
    passphrase = ca_passphrase(config)
    active = load_generations(config.ca_dir, config.ca, passphrase).active  # the issuing generation's RA
    ca = rotate_ra(active.directory, active.ca, config.ca, passphrase)
    new = ca.ra_cert
    print(f"new RA certificate serial {new.serial_number:x} valid from {_when(new.not_valid_before_utc)} "
          f"until {_when(new.not_valid_after_utc)}")
    print(_previous_ra_line(ca, config.ca.ra_grace_days))
    previous = ca.ra_keyring.previous[0].serial if ca.ra_keyring.previous else None
    return audit_cli_change(
        config, AuditAction.CA_ROTATE_RA, _ca_subject(config, active.label), "the RA was rotated",
        ra_serial=f"{new.serial_number:x}", not_after=new.not_valid_after_utc.isoformat(),
        **({"previous_ra_serial": f"{previous:x}"} if previous is not None else {}),
    )


def _ca_subject(config: ServerConfig, label: str) -> str:
    """The audit subject of a change to one CA generation."""
    return f"ca={config.ca.name} generation={label}"


def _previous_ra_line(ca: CertificateAuthority, grace_days: int) -> str:
    if not ca.ra_keyring.previous:
        return f"the previous RA no longer decrypts (ca.ra_grace_days is {grace_days}, or its certificate had expired)"
    previous = ca.ra_keyring.previous[0]
    return f"the previous RA (serial {previous.serial:x}) keeps decrypting until {_when(ra_decrypts_until(previous))}"


def cmd_ca_verify(config: ServerConfig, args: argparse.Namespace) -> int:
    """One line per finding, then the counts; 1 on a failure (with ``--strict`` on a warning too)."""
    directory, label = _issuing_directory(config)
    findings = verify_authority(directory, config, ca_passphrase(config), label=label)
    for finding in findings:
        print(_finding_line(finding))
    counts = Counter(finding.level for finding in findings)
    print(f"{counts[Level.OK]} ok, {counts[Level.WARNING]} warning(s), {counts[Level.FAIL]} failed")
    return 0 if passed(findings, strict=args.strict) else 1


def _issuing_directory(config: ServerConfig) -> tuple[Path, str]:
    """Where the issuing generation lives and its key label; the CA directory when the index is unreadable
    (``verify`` then reports what is wrong there)."""
    try:
        state = read_state(config.ca_dir, config.ca.name)
    except CAError:
        return config.ca_dir, ""
    record = state.record(state.active_label(datetime.now(UTC)))
    return record.directory(config.ca_dir), "" if record.is_first else record.label


def _finding_line(finding: Finding) -> str:
    # Subjects and details carry certificate names, which an imported certificate chooses: escaped.
    return printable(f"{finding.level.upper():<8}{finding.subject}: {finding.detail}")


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def cmd_rollover_stage(config: ServerConfig, args: argparse.Namespace) -> int:
    passphrase = ca_passphrase(config)
    check_keys_at_rest(config, passphrase, "ca rollover stage")
    try:
        subject = _subject_argument(args)
    except ValueError as exc:
        return fail(str(exc), 2)
    try:
        staged = stage_next(config.ca_dir, config.ca, passphrase, subject=subject, cross_sign=args.cross_sign,
                            imported=_imported_ca(args))
    except CAError as exc:
        return fail(str(exc))
    print(f"staged {staged.label}: GetNextCACert hands it out; it issues once `scep-server ca rollover activate` "
          "makes it active")
    _print_staged(staged)
    cert = staged.ca.ca_cert
    return audit_cli_change(
        config, AuditAction.CA_ROLLOVER_STAGE, _ca_subject(config, staged.label), f"{staged.label} was staged",
        ca_subject=cert.subject.rfc4514_string(), serial=f"{cert.serial_number:x}",
        not_after=cert.not_valid_after_utc.isoformat(), imported="yes" if args.cert is not None else "no",
        cross_signed="yes" if args.cross_sign else "no",
    )


def _subject_argument(args: argparse.Namespace) -> x509.Name | None:
    """The created CA's ``--subject``; ValueError for a bad one, or for options that do not go together."""
    if (args.cert is None) != (args.key is None):
        raise ValueError("--cert and --key go together: the next CA's certificate and its private key")
    if args.cert is None and (args.chain or args.key_password_env):
        raise ValueError("--chain and --key-password-env go with --cert and --key")
    if args.subject is None:
        return None
    if args.cert is not None:
        raise ValueError("--subject is for a created CA: an imported one has its certificate's subject")
    try:
        subject = parse_name(args.subject)
    except ValueError as exc:
        raise ValueError(f"--subject: {exc}") from None
    if not subject.rdns:
        raise ValueError("--subject must not be empty")
    return subject


def _imported_ca(args: argparse.Namespace) -> ImportedCa | None:
    if args.cert is None:
        return None
    password = os.environ.get(args.key_password_env, "").encode() if args.key_password_env else None
    return ImportedCa(
        cert_pem=read_file(args.cert, "the next CA's certificate"),
        key_pem=read_file(args.key, "the next CA's key"),
        key_password=password or None,
        chain_pem=read_file(args.chain, "the chain") if args.chain else None,
    )


def _print_staged(staged: Generation) -> None:
    ca = staged.ca
    fingerprints = ca.fingerprints()
    print_fields([
        ("label", staged.label),
        ("subject", ca.issuer_name),
        ("valid from", _when(ca.ca_cert.not_valid_before_utc)),
        ("valid until", _when(ca.ca_cert.not_valid_after_utc)),
        ("SHA-1 fingerprint", fingerprints["sha1"]),
        ("SHA-256 fingerprint", fingerprints["sha256"]),
        ("certificate file", staged.directory / CA_CERT),
        *_root_fields(ca),
        ("cross-signed", _cross_signed_line(staged.directory)),
    ], width=22)
    print(INTUNE_ROOT_BEFORE_ACTIVATION if ca.chain else INTUNE_BEFORE_ACTIVATION)


def _cross_signed_line(directory: Path) -> str:
    cross = cross_signed(directory)
    if cross is None:
        return "no"
    return f"yes, by {cross.issuer.rfc4514_string()} ({directory / CROSS_CERT})"


def cmd_rollover_activate(config: ServerConfig, args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    try:
        at = _zoned_time(args.at) if args.at is not None else None
    except ValueError as exc:
        return fail(str(exc), 2)
    try:
        _check_staged_loads(config)
        label = activate(config.ca_dir, config.ca, at=at, now=now)
    except CAError as exc:
        return fail(str(exc))
    since = f"from {_zoned_when(at)}" if at is not None and at > now else "from now on"
    print(f"{label} issues new certificates {since}")
    return audit_cli_change(
        config, AuditAction.CA_ROLLOVER_ACTIVATE, _ca_subject(config, label), f"{label} was activated",
        active_from=(at if at is not None and at > now else now).isoformat(),
    )


def _zoned_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--at {text!r} is not an ISO 8601 time (like 2026-05-01T08:00:00+02:00)") from None
    if moment.tzinfo is None:
        raise ValueError(f"--at {text!r} has no time zone: add one (like +02:00 or Z)")
    return moment


def _check_staged_loads(config: ServerConfig) -> None:
    """A staged CA that does not load must not become the issuer: the server would not start with it."""
    state = read_state(config.ca_dir, config.ca.name)
    if state.next is not None:
        record = state.record(state.next)
        load_ca(record.directory(config.ca_dir), config.ca, ca_passphrase(config), label=record.label)


def cmd_rollover_status(config: ServerConfig, args: argparse.Namespace) -> int:
    """One block per generation, oldest first; read from the certificate files, so no key is needed."""
    now = datetime.now(UTC)
    try:
        state = read_state(config.ca_dir, config.ca.name)
    except CAError as exc:
        return fail(str(exc))
    for number, record in enumerate(state.records):
        if number:
            print()
        print_fields(_generation_fields(config, state, record, now), width=22)
    return 0


def _generation_fields(
    config: ServerConfig, state: GenerationState, record: GenerationRecord, now: datetime
) -> list[tuple[str, object]]:
    directory = record.directory(config.ca_dir)
    rows: list[tuple[str, object]] = [("generation", record.label), ("role", _role(state, record.label, now))]
    try:
        cert = load_single_certificate(directory / CA_CERT)
    except CAError as exc:
        return [*rows, ("certificate", f"unreadable: {exc}")]
    rows += [("subject", cert.subject.rfc4514_string()), ("valid until", _when(cert.not_valid_after_utc))]
    if record.label == state.next:
        fingerprints = certificate_fingerprints(cert)
        rows += [("SHA-1 fingerprint", fingerprints["sha1"]), ("SHA-256 fingerprint", fingerprints["sha256"]),
                 ("cross-signed", _cross_signed_line(directory))]
    return rows


def _role(state: GenerationState, label: str, now: datetime) -> str:
    scheduled = state.activate_at
    if label == state.active_label(now):
        return f"active (since {_zoned_when(scheduled)})" if label == state.next and scheduled else "active"
    if label != state.next:
        return "retired"
    if scheduled is None:
        return "next (activates with `scep-server ca rollover activate`)"
    return f"next (activates at {_zoned_when(scheduled)})"


def _zoned_when(moment: datetime) -> str:
    return _when(moment.astimezone(UTC))
