"""``init``, ``import-ca`` and ``ca show|rotate-ra``: the CA, its RA and the database they start with."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from scep_server.ca.authority import (
    CA_KEY,
    RA_KEY,
    CertificateAuthority,
    ca_exists,
    certificate_fingerprints,
    check_keys_at_rest,
    import_ca,
    init_ca,
    key_backend,
    load_ca,
    rotate_ra,
)
from scep_server.ca.responder import OCSP_KEY
from scep_server.cli.common import Subcommands, fail, migrate
from scep_server.cli.output import print_fields
from scep_server.cli.preflight import require_startup
from scep_server.config import ServerConfig
from scep_server.files import make_private_dir
from scep_server.runtime import ca_passphrase


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
    ca.add_parser("rotate-ra", help="replace the RA key and certificate (restart the server after)").set_defaults(
        func=cmd_ca_rotate_ra
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
        ("RA valid until", f"{ca.ra_cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC"),
        ("chain above CA", len(ca.chain)),
        *_root_fields(ca),
        *_key_locations(config),
    ], width=22)
    return 0


def _root_fields(ca: CertificateAuthority) -> list[tuple[str, object]]:
    """The root of an imported chain: Intune's trusted-certificate profile carries the root, not the CA."""
    if not ca.chain:
        return []
    fingerprints = certificate_fingerprints(ca.root)
    return [("root subject", ca.root.subject.rfc4514_string()), ("root SHA-1", fingerprints["sha1"]),
            ("root SHA-256", fingerprints["sha256"])]


def _key_locations(config: ServerConfig) -> list[tuple[str, object]]:
    """Where each key lives: a file, or a token object (``pkcs11:...``)."""
    keys = key_backend(config.ca_dir, None, config.ca.keys)
    names = (("CA", CA_KEY), ("RA", RA_KEY), ("OCSP", OCSP_KEY))
    return [(f"{label} key", keys.describe(name)) for label, name in names]


def cmd_ca_rotate_ra(config: ServerConfig, args: argparse.Namespace) -> int:
    passphrase = ca_passphrase(config)
    ca = rotate_ra(config.ca_dir, load_ca(config.ca_dir, config.ca, passphrase), config.ca, passphrase)
    print(f"new RA certificate valid until {ca.ra_cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC")
    return 0
