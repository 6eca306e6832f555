"""``backup`` and ``restore``: one archive with the database and the CA directory (service/backup.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from scep_server.cli.common import Subcommands, fail, open_store
from scep_server.cli.output import print_fields
from scep_server.config import ServerConfig
from scep_server.files import make_private_dir
from scep_server.runtime import ca_passphrase
from scep_server.service.backup import BackupResult, RestoreResult, create_backup, restore_backup

WIDTH = 17
USAGE_ERROR = 2  # like every refused argument (InvalidInput)


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
    if out.is_dir():
        return fail(f"{out} is a directory: --out names the archive file to write", USAGE_ERROR)
    if out.exists() and not args.force:
        return fail(f"{out} exists: give another --out, or --force to replace it")
    if not out.parent.is_dir():
        return fail(f"cannot write {out}: {out.parent} is not a directory", USAGE_ERROR)
    passphrase = ca_passphrase(config)
    with open_store(config) as store:
        result = create_backup(config, store.engine, passphrase, out)
    print_fields([
        ("backup", result.path),
        ("schema revision", result.revision),
        ("rows", _counts(result.rows)),
        ("CA files", ", ".join(result.ca_files)),
        ("keys", _backed_up_keys(result)),
    ], WIDTH)  # fmt: skip
    return 0


def cmd_restore(config: ServerConfig, args: argparse.Namespace) -> int:
    archive: Path = args.archive
    if not archive.is_file():
        return fail(f"{archive} is not a file")
    make_private_dir(Path(config.data_dir))
    with open_store(config) as store:
        result = restore_backup(config, store.engine, ca_passphrase(config), archive)
    fields: list[tuple[str, object]] = [
        ("restored", archive),
        ("CA", result.ca_subject),
        ("schema revision", f"{result.revision} (migrated to the newest)"),
        ("rows", _counts(result.rows)),
        ("CA files", ", ".join(result.ca_files)),
        ("keys", _restored_keys(result)),
    ]
    if result.former_ca_dir is not None:
        fields.append(("former CA dir", f"{result.former_ca_dir} (it held no CA; remove it when done)"))
    print_fields(fields, WIDTH)
    return 0


def _backed_up_keys(result: BackupResult) -> str:
    if not result.keys_in_archive:
        return (f"kept by the {result.key_backend} key backend (on the token), NOT in the archive: "
                "a restore needs the same token")
    if result.keys_encrypted:
        return "encrypted with the CA passphrase (not in the archive)"
    return "NOT encrypted: anyone who reads this archive holds the CA key"


def _restored_keys(result: RestoreResult) -> str:
    if not result.keys_in_archive:
        return f"not in the archive: loaded from the {result.key_backend} key backend (the token)"
    return "from the archive, into the CA directory"


def _counts(rows: dict[str, int]) -> str:
    return ", ".join(f"{table} {count}" for table, count in rows.items())
