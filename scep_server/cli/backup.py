"""``backup`` and ``restore``: one archive with the database and the CA directory (service/backup.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scep_server.cli.common import Subcommands, fail, open_store
from scep_server.cli.output import print_fields
from scep_server.config import ServerConfig
from scep_server.files import make_private_dir
from scep_server.runtime import ca_passphrase
from scep_server.service.backup import create_backup, restore_backup

WIDTH = 17


def register(sub: Subcommands) -> None:
    backup = sub.add_parser("backup", help="write a consistent snapshot of the database and the CA material")
    backup.add_argument("--out", required=True, type=Path, help="the archive to write (a .tar.gz, mode 0600)")
    backup.add_argument("--force", action="store_true", help="replace an existing archive")
    backup.set_defaults(func=cmd_backup)

    restore = sub.add_parser("restore", help="restore a backup into an empty database and data directory")
    restore.add_argument("--from", dest="archive", required=True, type=Path, help="the archive `backup` wrote")
    restore.set_defaults(func=cmd_restore)


def cmd_backup(config: ServerConfig, args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and not args.force:
        return fail(f"{out} exists: give another --out, or --force to replace it")
    if not out.parent.is_dir():
        return fail(f"{out.parent} is not a directory")
    passphrase = ca_passphrase(config)
    with open_store(config) as store:
        result = create_backup(config, store.engine, passphrase, out)
    print_fields([
        ("backup", result.path),
        ("schema revision", result.revision),
        ("rows", _counts(result.rows)),
        ("CA files", ", ".join(result.ca_files)),
        ("keys", "encrypted with the CA passphrase (not in the archive)" if result.keys_encrypted
         else "NOT encrypted: anyone who reads this archive holds the CA key"),
    ], WIDTH)  # fmt: skip
    return 0


def cmd_restore(config: ServerConfig, args: argparse.Namespace) -> int:
    archive: Path = args.archive
    if not archive.is_file():
        return fail(f"{archive} is not a file")
    make_private_dir(Path(config.data_dir))
    with open_store(config) as store:
        result = restore_backup(config, store.engine, ca_passphrase(config), archive)
    print_fields([
        ("restored", archive),
        ("CA", result.ca_subject),
        ("schema revision", f"{result.revision} (migrated to the newest)"),
        ("rows", _counts(result.rows)),
        ("CA files", ", ".join(result.ca_files)),
    ], WIDTH)  # fmt: skip
    return 0


def _counts(rows: dict[str, int]) -> str:
    return ", ".join(f"{table} {count}" for table, count in rows.items())
