"""What the command groups share: the command signature, the store they open, the CA's name, failing."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeAlias

from scep_server.ca.generations import issuer_names
from scep_server.config import ServerConfig
from scep_server.files import make_private_dir
from scep_server.store import Store

Command = Callable[[ServerConfig, argparse.Namespace], int]
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # what add_subparsers() returns
PROG = "scep-server"


def fail(message: str, status: int = 1) -> int:
    """Say why on stderr; the exit status."""
    print(f"{PROG}: {message}", file=sys.stderr)
    return status


@contextmanager
def open_store(config: ServerConfig) -> Iterator[Store]:
    store = Store.open(config.effective_database_url)
    try:
        yield store
    finally:
        store.close()


def migrate(config: ServerConfig) -> None:
    make_private_dir(Path(config.data_dir))
    with open_store(config) as store:
        store.migrate()


def ca_issuer(config: ServerConfig) -> str:
    """The issuing CA's subject as the store keys certificates, without loading (or decrypting) its key."""
    return issuer_names(config.ca_dir, config.ca.name)[0]
