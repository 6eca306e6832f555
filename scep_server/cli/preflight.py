"""What ``serve``, ``init`` and ``config check`` check before anything is written or forked.

The configuration has loaded (its types and ranges are sound); these are the checks that need the
outside world: the CA passphrase and the keys-at-rest policy, every profile's validator (its secret
resolvable), the Intune app's credentials, the database URL and its driver, and the CA material when
there is some. Every problem is one line, and all are reported together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from scep_server.ca.authority import CertificateAuthority, ca_exists, check_keys_at_rest, load_ca
from scep_server.challenge import Resources, build_validator, needs_intune
from scep_server.cli.beside import check_emulator_port
from scep_server.config import ServerConfig
from scep_server.config.parsing import Problems
from scep_server.errors import CAError, ConfigError
from scep_server.intune.auth import app_credential
from scep_server.runtime import ca_passphrase

__all__ = ["Startup", "check_startup", "redacted_database_url", "require_startup"]


@dataclass(frozen=True, slots=True)
class Startup:
    """What the checks found: the problems, one line each, and the CA when there was one to load."""

    problems: tuple[str, ...]
    ca: CertificateAuthority | None


def check_startup(
    config: ServerConfig, action: str, *, with_emulator: bool = False, ca_required: bool = False
) -> Startup:
    """Everything ``action`` (``serve``, ``init``) needs before it writes or forks. ``with_emulator``: the
    Intune emulator will stand in for Entra ID and Intune. ``ca_required``: there is no ``--init-if-missing``."""
    problems = Problems()
    passphrase_known, passphrase = _passphrase(config, problems)
    keys_allowed = passphrase_known and _keys_at_rest(config, passphrase, action, problems)
    _validators(config, problems)
    _intune(config, with_emulator, problems)
    _database(config, problems)
    ca = _ca(config, passphrase, ca_required, problems) if keys_allowed else None
    return Startup(problems.lines, ca)


def require_startup(
    config: ServerConfig, action: str, *, with_emulator: bool = False, ca_required: bool = False
) -> Startup:
    """:func:`check_startup`, raising ConfigError (one line per problem) when there is any."""
    startup = check_startup(config, action, with_emulator=with_emulator, ca_required=ca_required)
    if startup.problems:
        raise ConfigError("\n".join(startup.problems))
    return startup


def _passphrase(config: ServerConfig, problems: Problems) -> tuple[bool, bytes | None]:
    try:
        return True, ca_passphrase(config)
    except ConfigError as exc:
        problems.add(f"ca.key_passphrase: {exc}")
        return False, None


def _keys_at_rest(config: ServerConfig, passphrase: bytes | None, action: str, problems: Problems) -> bool:
    try:
        check_keys_at_rest(config, passphrase, action)
    except ConfigError as exc:
        problems.add(exc)
        return False
    return True


def _validators(config: ServerConfig, problems: Problems) -> None:
    """Build each profile's validator as the server would; those that call Intune need its app (below)."""
    for profile in config.profiles:
        if not needs_intune(profile.challenge):
            with problems.collecting():
                build_validator(profile, Resources())


def _intune(config: ServerConfig, with_emulator: bool, problems: Problems) -> None:
    """The app's credentials when the server will talk to Intune (the emulator brings its own)."""
    if with_emulator:
        with problems.collecting():
            check_emulator_port(config)
        return
    intune = config.intune
    if not (intune.configured or any(needs_intune(p.challenge) for p in config.profiles)):
        return
    with problems.collecting():
        app_credential(intune)
    if intune.ca_bundle and not Path(intune.ca_bundle).is_file():
        problems.add(f"intune.ca_bundle: no file {intune.ca_bundle} (the PEM bundle that verifies Entra ID, "
                     "Graph and Intune; unset: the system's)")


def _database(config: ServerConfig, problems: Problems) -> None:
    """The URL parses and names a dialect whose driver is installed; no connection is made."""
    try:
        url = make_url(config.effective_database_url)
    except (ArgumentError, ValueError):  # ValueError: a port that is no number, say
        problems.add("database_url is not a database URL (like sqlite:///path or postgresql+psycopg://user@host/db)")
        return
    try:
        url.get_dialect().import_dbapi()
    except (ArgumentError, ImportError) as exc:
        problems.add(f"database_url {_redacted(url)}: no database driver for {url.drivername} ({exc})")


def _ca(
    config: ServerConfig, passphrase: bytes | None, required: bool, problems: Problems
) -> CertificateAuthority | None:
    if not ca_exists(config.ca_dir, config.ca.keys):
        if required:
            problems.add(f"no CA in {config.ca_dir}: run `scep-server init` (or serve --init-if-missing)")
        return None
    try:
        return _load_without_rewriting(config, passphrase)
    except (CAError, ConfigError) as exc:
        problems.add(exc)
        return None


def _load_without_rewriting(config: ServerConfig, passphrase: bytes | None) -> CertificateAuthority:
    """The CA as it is on disk: keys found unencrypted are read as they are, not encrypted in place with the
    passphrase (``serve`` does that when it loads them), so that checking writes nothing."""
    try:
        return load_ca(config.ca_dir, config.ca, None)
    except CAError:
        if passphrase is None:
            raise
    return load_ca(config.ca_dir, config.ca, passphrase)


def redacted_database_url(config: ServerConfig) -> str:
    """The database URL as it may be shown: without its password (nor one in its query string)."""
    try:
        return _redacted(make_url(config.effective_database_url))
    except ArgumentError:
        return "(not a database URL)"


def _redacted(url: URL) -> str:
    return url.difference_update_query(["password"]).render_as_string(hide_password=True)
