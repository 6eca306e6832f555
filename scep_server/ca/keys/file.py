"""The ``file`` key backend: every key a PKCS#8 PEM file of the CA directory, mode 0600.

Keys are encrypted with the CA passphrase when one is set; without one a key is written with a
warning, and ``serve`` and ``import-ca`` refuse unencrypted keys unless the configuration allows them
(:meth:`FileBackend.check_at_rest`). A key file found unencrypted while a passphrase is configured is
encrypted with it in place when it is loaded: setting ``ca.key_passphrase`` is how an admin asks for
encrypted keys, so it is never ignored. Files are written atomically (:mod:`scep_server.files`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from scep_server.ca.keys import KeyContext, KeySpec, register
from scep_server.ca.keys.generate import PrivateKey, generate_private_key
from scep_server.ca.keys.local import LocalKey
from scep_server.ca.keys.pem import parse_private_key, pkcs8_pem
from scep_server.errors import CAError, ConfigError
from scep_server.files import KEY_FILE_MODE, StagedFile, read_file, stage, write_atomic

PASSPHRASE_HINT = "set SCEP_CA_PASSPHRASE (or ca.key_passphrase)"
UNENCRYPTED_KEYS_REFUSED = (
    "{action} keeps the CA and RA keys encrypted at rest, and no CA passphrase is set: set SCEP_CA_PASSPHRASE "
    "(or ca.key_passphrase; keys found unencrypted are then encrypted with it when loaded), or set "
    "ca.allow_unencrypted_keys: true to accept unencrypted keys (development configs say dev: true)"
)

log = logging.getLogger(__name__)


@register("file")
class FileBackend:
    """The keys of one CA directory, encrypted with the CA passphrase when one is set."""

    def __init__(self, context: KeyContext) -> None:
        self.directory = context.directory
        self._passphrase = context.passphrase

    def describe(self, name: str) -> str:
        return str(self.directory / name)

    def exists(self, name: str) -> bool:
        return (self.directory / name).exists()

    def load(self, name: str) -> FileKey:
        return FileKey(load_private_key(self.directory / name, self._passphrase), self)

    def generate(self, spec: KeySpec) -> FileKey:
        return FileKey(generate_private_key(spec.key_type, key_size=spec.rsa_bits, curve=spec.curve), self)

    def adopt(self, data: bytes, password: bytes | None, *, source: str, hint: str) -> FileKey:
        key, _ = parse_private_key(data, password, source=source, hint=hint)
        return FileKey(key, self)

    def check_at_rest(self, action: str, *, allow_unprotected: bool) -> None:
        """Without a passphrase the key files are plain PEM: refused unless the configuration allows it."""
        if self._passphrase is None and not allow_unprotected:
            raise ConfigError(UNENCRYPTED_KEYS_REFUSED.format(action=action))

    def destroy(self, name: str) -> None:
        (self.directory / name).unlink(missing_ok=True)

    def stage(self, name: str, key: PrivateKey) -> StagedFile:
        """Write ``key`` as ``name`` under a temporary name; without a passphrase, with a warning."""
        path = self.directory / name
        if self._passphrase is None:
            log.warning("writing the private key %s unencrypted: anyone who can read the file holds the key; "
                        "%s to encrypt it", path, PASSPHRASE_HINT)
        return stage(path, pkcs8_pem(key, self._passphrase), KEY_FILE_MODE)


@dataclass(frozen=True, slots=True)
class FileKey(LocalKey):
    """A key of a :class:`FileBackend`, in memory; :meth:`stage` writes it into the CA directory."""

    backend: FileBackend = field(repr=False, compare=False)

    def stage(self, name: str) -> StagedFile:
        return self.backend.stage(name, self._key)


def load_private_key(path: Path, passphrase: bytes | None) -> PrivateKey:
    """Read a PEM (or DER) RSA or EC private key, as :meth:`FileBackend.stage` writes them.

    An unencrypted key file is encrypted in place with ``passphrase`` when one is given (module doc).
    """
    key, encrypted = parse_private_key(read_file(path, "key"), passphrase, source=str(path), hint=PASSPHRASE_HINT)
    if passphrase and not encrypted:
        _encrypt_in_place(path, key, passphrase)
    return key


def _encrypt_in_place(path: Path, key: PrivateKey, passphrase: bytes) -> None:
    try:
        write_atomic(path, pkcs8_pem(key, passphrase), KEY_FILE_MODE)
    except CAError as exc:
        raise CAError(f"{path} is unencrypted although a CA passphrase is set, and encrypting it failed: {exc}; "
                      "make the CA directory writable once, or unset the passphrase") from exc
    log.warning("%s was unencrypted: encrypted it with the configured CA passphrase", path)
