"""``init``, ``import-ca`` and ``ca show|rotate-ra|verify``: the CA, its RA and the database they start with."""

from __future__ import annotations

import argparse
import os
from collections import Counter
from datetime import datetime
from pathlib import Path

from scep_server.ca.authority import (
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
from scep_server.ca.responder import OCSP_KEY
from scep_server.ca.verify import Finding, Level, passed, ra_decrypts_until, verify_authority
from scep_server.cli.common import Subcommands, fail, migrate
from scep_server.cli.output import print_fields
from scep_server.cli.preflight import require_startup
from scep_server.config import ServerConfig
from scep_server.files import make_private_dir
from scep_server.pki.names import printable
from scep_server.runtime import ca_passphrase

ROTATE_RA_HELP = (
    "replace the RA key and certificate; a running server takes the new RA within seconds, and the previous "
    "RA keeps decrypting requests encrypted to it for ca.ra_grace_days"
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

    ca = sub.add_parser("ca", help="the CA").add_subparsers(required=True, metavar="ACTION")
    ca.add_parser("show", help="CA and RA details with the fingerprints Intune asks for").set_defaults(
        func=cmd_ca_show
    )
    ca.add_parser("rotate-ra", help=ROTATE_RA_HELP).set_defaults(func=cmd_ca_rotate_ra)
    verify = ca.add_parser("verify", help="check that the CA's keys, certificates and chain fit together and are valid")
    verify.add_argument("--strict", action="store_true", help="exit 1 on warnings too")
    verify.set_defaults(func=cmd_ca_verify)


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
    ca = load_ca(config.ca_dir, config.ca, ca_passphrase(config))
    fingerprints = ca.fingerprints()
    print_fields([
        ("name", ca.name),
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
        *_key_locations(config, ca),
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


def _key_locations(config: ServerConfig, ca: CertificateAuthority) -> list[tuple[str, object]]:
    """Where each key lives: a file, or a token object (``pkcs11:...``); the RA's is the keyring's current."""
    keys = key_backend(config.ca_dir, None, config.ca.keys, namespace=generation_namespace(ca.label))
    names = (("CA", CA_KEY), ("RA", ca.ra_keyring.current.files.key), ("OCSP", OCSP_KEY))
    return [(f"{label} key", keys.describe(name)) for label, name in names]


def cmd_ca_rotate_ra(config: ServerConfig, args: argparse.Namespace) -> int:
    passphrase = ca_passphrase(config)
    ca = rotate_ra(config.ca_dir, load_ca(config.ca_dir, config.ca, passphrase), config.ca, passphrase)
    new = ca.ra_cert
    print(f"new RA certificate serial {new.serial_number:x} valid from {_when(new.not_valid_before_utc)} "
          f"until {_when(new.not_valid_after_utc)}")
    print(_previous_ra_line(ca, config.ca.ra_grace_days))
    return 0


def _previous_ra_line(ca: CertificateAuthority, grace_days: int) -> str:
    if not ca.ra_keyring.previous:
        return f"the previous RA no longer decrypts (ca.ra_grace_days is {grace_days}, or its certificate had expired)"
    previous = ca.ra_keyring.previous[0]
    return f"the previous RA (serial {previous.serial:x}) keeps decrypting until {_when(ra_decrypts_until(previous))}"


def cmd_ca_verify(config: ServerConfig, args: argparse.Namespace) -> int:
    """One line per finding, then the counts; 1 on a failure (with ``--strict`` on a warning too)."""
    findings = verify_authority(config.ca_dir, config, ca_passphrase(config))
    for finding in findings:
        print(_finding_line(finding))
    counts = Counter(finding.level for finding in findings)
    print(f"{counts[Level.OK]} ok, {counts[Level.WARNING]} warning(s), {counts[Level.FAIL]} failed")
    return 0 if passed(findings, strict=args.strict) else 1


def _finding_line(finding: Finding) -> str:
    # Subjects and details carry certificate names, which an imported certificate chooses: escaped.
    return printable(f"{finding.level.upper():<8}{finding.subject}: {finding.detail}")


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"
