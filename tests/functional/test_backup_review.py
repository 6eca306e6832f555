"""Backup and restore at their edges: a restore that fails half-way, an RA keyring and subdirectories in
the CA directory, keys on a SoftHSM2 token, a planted link where the archive is written, sizes in the
manifest, ``--out`` paths the archive cannot go to, and configuration values that must not be echoed
or cannot be paths."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scep_server.ca.authority import CA_CERT, load_ca, rotate_ra
from scep_server.ca.generations import GENERATIONS_DIR, activate, load_generations, stage_next
from scep_server.cli import main
from scep_server.config import SecretSource, ServerConfig, load_config
from scep_server.errors import CAError, ConfigError, InvalidInput, StoreError
from scep_server.service import backup
from scep_server.service.backup import MANIFEST, STAGING_PREFIX, ca_in_directory, create_backup, restore_backup
from scep_server.store.backup import BackupRepository, Row
from tests.functional.conftest import CHALLENGE, CONFIG, Device, ScepTestServer, make_config, serving
from tests.functional.test_backup import (  # noqa: F401  (_close_stores: a fixture)
    PASSPHRASE,
    _close_stores,
    backup_config,
    engine_for,
    restored_servers,
)
from tests.support.softhsm import SoftHsmToken, softhsm_token

SECRET = PASSPHRASE.encode()


@pytest.fixture
def original(tmp_path: Path) -> Iterator[ScepTestServer]:
    with serving(backup_config(tmp_path / "original")) as server:
        yield server


def _backup(server: ScepTestServer, archive: Path) -> Path:
    create_backup(server.runtime.config, server.runtime.store.engine, SECRET, archive)
    return archive


def _tree(directory: Path, *, dot_files: bool = True) -> dict[str, bytes]:
    """Every file below ``directory`` and its content."""
    return {path.relative_to(directory).as_posix(): path.read_bytes()
            for path in sorted(directory.rglob("*"))
            if path.is_file() and (dot_files or not path.name.startswith("."))}  # fmt: skip


def _staging_dirs(config: ServerConfig) -> list[Path]:
    return list(Path(config.data_dir).glob(STAGING_PREFIX + "*"))


def _former_ca_dirs(config: ServerConfig) -> list[Path]:
    return list(Path(config.data_dir).glob("ca.before-restore-*"))


# ------------------------------------------------------------------------------ a restore that fails half-way


def test_a_wrong_passphrase_leaves_the_directory_at_the_ca_path_as_it_was(
    original: ScepTestServer, tmp_path: Path
) -> None:
    archive = _backup(original, tmp_path / "backup.tar.gz")
    target = backup_config(tmp_path / "restored")
    target.ca_dir.mkdir(parents=True, mode=0o700)
    (target.ca_dir / "notes.txt").write_bytes(b"no CA here yet\n")
    engine = engine_for(target)
    with pytest.raises(CAError, match="(?i)passphrase|password|decrypt"):
        restore_backup(target, engine, b"not-the-passphrase", archive)
    assert _tree(target.ca_dir) == {"notes.txt": b"no CA here yet\n"}
    assert _staging_dirs(target) == [] and _former_ca_dirs(target) == []
    assert BackupRepository(engine).is_empty()


def test_a_load_failing_after_the_ca_moved_into_place_puts_the_former_directory_back(
    original: ScepTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _backup(original, tmp_path / "backup.tar.gz")
    target = backup_config(tmp_path / "restored")
    target.ca_dir.mkdir(parents=True, mode=0o700)
    (target.ca_dir / "ra.pem").write_bytes(b"a stale RA certificate\n")
    load = BackupRepository.load

    def commit_fails(self: BackupRepository, revision: str, rows: Callable[[str], Iterable[Row]], *,
                     before_commit: Callable[[], None] | None = None) -> dict[str, int]:
        def then_fail() -> None:
            assert before_commit is not None
            before_commit()
            raise StoreError("the commit failed")

        return load(self, revision, rows, before_commit=then_fail)

    monkeypatch.setattr(BackupRepository, "load", commit_fails)
    engine = engine_for(target)
    with pytest.raises(StoreError, match="the commit failed"):
        restore_backup(target, engine, SECRET, archive)
    assert _tree(target.ca_dir) == {"ra.pem": b"a stale RA certificate\n"}
    assert _staging_dirs(target) == [] and _former_ca_dirs(target) == []
    assert BackupRepository(engine).is_empty()


def test_the_staged_ca_is_opened_before_the_ca_path_is_touched_and_the_former_directory_kept(
    original: ScepTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _backup(original, tmp_path / "backup.tar.gz")
    target = backup_config(tmp_path / "restored")
    target.ca_dir.mkdir(parents=True, mode=0o700)
    (target.ca_dir / "notes.txt").write_bytes(b"kept\n")
    opened: list[tuple[Path, dict[str, bytes]]] = []

    def recording_load(ca_dir: Path, *args: Any, **kwargs: Any) -> Any:
        opened.append((ca_dir, _tree(target.ca_dir)))
        return load_generations(ca_dir, *args, **kwargs)

    monkeypatch.setattr(backup, "load_generations", recording_load)
    result = restore_backup(target, engine_for(target), SECRET, archive)
    [(staged, at_that_time)] = opened
    assert staged.parent.parent == Path(target.data_dir) and staged.parent.name.startswith(STAGING_PREFIX)
    assert at_that_time == {"notes.txt": b"kept\n"}
    assert result.former_ca_dir is not None and _tree(result.former_ca_dir) == {"notes.txt": b"kept\n"}
    assert load_ca(target.ca_dir, target.ca, SECRET).ca_cert == original.ca.ca_cert
    assert _staging_dirs(target) == []


def test_a_staging_directory_left_by_a_crashed_restore_is_removed(original: ScepTestServer, tmp_path: Path) -> None:
    archive = _backup(original, tmp_path / "backup.tar.gz")
    target = backup_config(tmp_path / "restored")
    leftover = Path(target.data_dir) / f"{STAGING_PREFIX}crashed"
    (leftover / "ca").mkdir(parents=True)
    (leftover / "ca" / CA_CERT).write_bytes(b"half of a CA\n")
    restore_backup(target, engine_for(target), SECRET, archive)
    assert _staging_dirs(target) == []
    assert (target.ca_dir / CA_CERT).read_bytes() == (original.runtime.config.ca_dir / CA_CERT).read_bytes()


def test_a_second_restore_into_the_same_data_dir_is_refused_and_removes_nothing(
    original: ScepTestServer, tmp_path: Path
) -> None:
    archive = _backup(original, tmp_path / "backup.tar.gz")
    target = backup_config(tmp_path / "restored")
    running = Path(target.data_dir) / f"{STAGING_PREFIX}running"
    running.mkdir(parents=True)
    with (Path(target.data_dir) / ".restore.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a restore under way holds it
        with pytest.raises(InvalidInput, match="another restore into .* is under way"):
            restore_backup(target, engine_for(target), SECRET, archive)
    assert running.is_dir() and not target.ca_dir.exists()


# ------------------------------------------------------------------------ what the CA directory holds


def test_a_rotated_ra_and_the_files_of_subdirectories_come_back(original: ScepTestServer, tmp_path: Path) -> None:
    config = original.runtime.config
    before = original.ca  # the live authority follows the rotation within a second: keep what it was
    rotated = rotate_ra(config.ca_dir, before, config.ca, SECRET)
    nested = config.ca_dir / "generations" / "next"
    nested.mkdir(parents=True, mode=0o700)
    (nested / CA_CERT).write_bytes((config.ca_dir / CA_CERT).read_bytes())
    archive = _backup(original, tmp_path / "backup.tar.gz")
    target = backup_config(tmp_path / "restored")
    result = restore_backup(target, engine_for(target), SECRET, archive)
    assert "generations/next/ca.pem" in result.ca_files and "ra-keyring.json" in result.ca_files
    assert _tree(target.ca_dir) == _tree(config.ca_dir, dot_files=False)  # not the responder's lock file
    assert stat.S_IMODE((target.ca_dir / "generations" / "next").stat().st_mode) == 0o700
    assert stat.S_IMODE((target.ca_dir / "generations" / "next" / CA_CERT).stat().st_mode) == 0o600
    restored = load_ca(target.ca_dir, target.ca, SECRET)
    assert restored.ra_cert == rotated.ra_cert != before.ra_cert
    assert [ra.cert for ra in restored.ra_keyring.previous] == [before.ra_cert]


# ------------------------------------------------------------------------------------ CA generations


def test_a_staged_generation_is_backed_up_and_restored_staged(original: ScepTestServer, tmp_path: Path) -> None:
    config = original.runtime.config
    staged = stage_next(config.ca_dir, config.ca, SECRET)
    archive = _backup(original, tmp_path / "backup.tar.gz")
    target = backup_config(tmp_path / "restored")
    result = restore_backup(target, engine_for(target), SECRET, archive)
    assert result.ca_subject == original.ca.ca_cert.subject.rfc4514_string()  # the one that issues
    assert f"{GENERATIONS_DIR}/{staged.label}/ca.pem" in result.ca_files
    restored = load_generations(target.ca_dir, target.ca, SECRET)
    assert restored.active.ca.ca_cert == original.ca.ca_cert
    assert restored.next is not None and restored.next.ca.ca_cert == staged.ca.ca_cert


def test_after_an_activation_the_restore_reports_the_issuing_generation(
    original: ScepTestServer, tmp_path: Path
) -> None:
    config = original.runtime.config
    first = original.ca  # the live authority follows the activation within a second: keep what it was
    staged = stage_next(config.ca_dir, config.ca, SECRET)
    activate(config.ca_dir, config.ca)
    archive = _backup(original, tmp_path / "backup.tar.gz")
    target = backup_config(tmp_path / "restored")
    result = restore_backup(target, engine_for(target), SECRET, archive)
    assert result.ca_subject == staged.ca.ca_cert.subject.rfc4514_string() != first.issuer_name
    restored = load_generations(target.ca_dir, target.ca, SECRET)
    assert restored.active.ca.ca_cert == staged.ca.ca_cert
    assert [generation.ca.ca_cert for generation in restored.retired] == [first.ca_cert]


@pytest.mark.parametrize("activated", [True, False], ids=["issuing", "staged"])
def test_a_generation_that_does_not_load_is_refused_by_backup(
    original: ScepTestServer, tmp_path: Path, activated: bool
) -> None:
    config = original.runtime.config
    staged = stage_next(config.ca_dir, config.ca, SECRET)
    if activated:
        activate(config.ca_dir, config.ca)
    (staged.directory / CA_CERT).unlink()
    role = "issuing" if activated else "staged"
    archive = tmp_path / "backup.tar.gz"
    with pytest.raises(CAError, match=f"the {role} CA generation {staged.label} does not load: .*missing ca.pem"):
        create_backup(config, original.runtime.store.engine, SECRET, archive)
    assert not archive.exists()


# ------------------------------------------------------------------------------------ keys on a token


def _token_config(root: Path, token: SoftHsmToken) -> ServerConfig:
    root.mkdir(parents=True, exist_ok=True)
    keys = (f"  keys:\n    type: pkcs11\n    pkcs11:\n      module: {token.module}\n"
            f"      token_label: {token.label}\n      pin: {{{{value: '{token.pin}'}}}}\n")  # fmt: skip
    return make_config(root, CONFIG.replace("  key_size: 2048\n", "  key_size: 2048\n" + keys))


def _config_file(config: ServerConfig) -> str:
    return str(Path(config.data_dir).parent / "scep-server.yaml")


@pytest.fixture
def token(tmp_path: Path) -> Iterator[SoftHsmToken]:
    with softhsm_token(tmp_path / "softhsm") as made:
        yield made


def test_a_ca_on_a_token_is_backed_up_without_keys_and_restored_from_the_token(
    token: SoftHsmToken, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _token_config(tmp_path / "original", token)
    archive = tmp_path / "backup.tar.gz"
    with serving(source) as first:
        issued = first.enroll(Device(common_name="before-backup"))
        capsys.readouterr()
        assert main(["--config", _config_file(source), "backup", "--out", str(archive)]) == 0
        backed_up = capsys.readouterr().out
    assert "pkcs11 key backend (on the token), NOT in the archive" in backed_up
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
    assert "ca/ca.pem" in names and not [name for name in names if name.endswith(".key")]
    assert (manifest["key_backend"], manifest["keys_in_archive"], manifest["keys_encrypted"]) == ("pkcs11", False,
                                                                                                  False)
    target = _token_config(tmp_path / "restored", token)
    assert main(["--config", _config_file(target), "restore", "--from", str(archive)]) == 0
    assert "loaded from the pkcs11 key backend" in capsys.readouterr().out
    for server in restored_servers(target):
        assert server.ca.ca_cert == first.ca.ca_cert and server.ca.ra_cert == first.ca.ra_cert
        assert server.runtime.store.get_certificate(issued.serial_number) is not None
        server.enroll(Device(common_name="after-restore"))  # the RA on the token decrypts


def _unreachable_token_config(root: Path) -> ServerConfig:
    root.mkdir(parents=True, exist_ok=True)
    keys = "  keys:\n    type: pkcs11\n    pkcs11:\n      module: /nonexistent/libpkcs11.so\n      token_label: none\n"
    return make_config(root, CONFIG.replace("  key_size: 2048\n", "  key_size: 2048\n" + keys))


def test_whether_a_ca_is_there_is_told_by_the_ca_directorys_files_not_by_a_token(
    original: ScepTestServer, tmp_path: Path
) -> None:
    target = _unreachable_token_config(tmp_path / "restored")
    assert not ca_in_directory(target.ca_dir)
    target.ca_dir.mkdir(parents=True)
    (target.ca_dir / CA_CERT).write_bytes(b"")
    assert ca_in_directory(target.ca_dir)
    with pytest.raises(InvalidInput, match="already holds a CA"):  # without opening the (missing) module
        restore_backup(target, engine_for(target), None, _backup(original, tmp_path / "backup.tar.gz"))


def test_a_backup_with_key_files_does_not_restore_into_a_token_configuration(
    original: ScepTestServer, tmp_path: Path
) -> None:
    archive = _backup(original, tmp_path / "backup.tar.gz")
    target = _unreachable_token_config(tmp_path / "restored")
    with pytest.raises(InvalidInput, match="kept by the 'file' key backend, but ca.keys.type is 'pkcs11'"):
        restore_backup(target, engine_for(target), None, archive)
    assert not target.ca_dir.exists() and _staging_dirs(target) == []


# ---------------------------------------------------------------------------------- the archive itself


def test_the_archive_is_written_through_a_new_private_file_never_a_planted_link(
    original: ScepTestServer, tmp_path: Path
) -> None:
    out_dir = tmp_path / "backups"
    out_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"not the archive's to overwrite\n")
    (out_dir / ".backup.tar.gz.partial").symlink_to(victim)
    archive = _backup(original, out_dir / "backup.tar.gz")
    assert victim.read_bytes() == b"not the archive's to overwrite\n"
    assert not archive.is_symlink() and stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert sorted(path.name for path in out_dir.iterdir()) == [".backup.tar.gz.partial", "backup.tar.gz"]


def test_the_manifest_gives_the_size_and_digest_of_every_member(original: ScepTestServer, tmp_path: Path) -> None:
    original.enroll(Device(common_name="sized"))
    with tarfile.open(_backup(original, tmp_path / "backup.tar.gz")) as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())  # type: ignore[union-attr]
        contents = {info.name: tar.extractfile(info).read()  # type: ignore[union-attr]
                    for info in tar.getmembers() if info.name != MANIFEST}  # fmt: skip
    assert manifest["sizes"] == {name: len(data) for name, data in contents.items()}
    assert manifest["sha256"] == {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}


def _with_manifest_changed(archive: Path, out: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    with tarfile.open(archive) as src, tarfile.open(out, "w:gz") as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == MANIFEST:
                manifest = json.loads(data)
                change(manifest)
                data = json.dumps(manifest).encode()
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return out


def test_a_member_of_another_size_than_the_manifest_says_is_refused(
    original: ScepTestServer, tmp_path: Path
) -> None:
    def grow(manifest: dict[str, Any]) -> None:
        manifest["sizes"]["ca/ca.pem"] += 1

    archive = _with_manifest_changed(_backup(original, tmp_path / "backup.tar.gz"), tmp_path / "grown.tar.gz", grow)
    target = backup_config(tmp_path / "restored")
    with pytest.raises(InvalidInput, match=r"ca/ca.pem holds \d+ bytes where its manifest says \d+"):
        restore_backup(target, engine_for(target), SECRET, archive)
    assert not ca_in_directory(target.ca_dir) and _staging_dirs(target) == []


def test_a_truncated_archive_is_refused_as_damaged(original: ScepTestServer, tmp_path: Path) -> None:
    whole = _backup(original, tmp_path / "backup.tar.gz").read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    target = backup_config(tmp_path / "restored")
    with pytest.raises(InvalidInput, match=r"cannot be read \(damaged\?\)"):
        restore_backup(target, engine_for(target), SECRET, cut)
    assert not ca_in_directory(target.ca_dir) and _staging_dirs(target) == []


# ------------------------------------------------------------------------------ the command line


def _dev_config_file(tmp_path: Path, data_dir: str | None = None) -> str:
    path = tmp_path / "scep.yaml"
    text = CONFIG.format(data_dir=tmp_path / "var", challenge=CHALLENGE) + "dev: true\n"
    if data_dir is not None:
        text = text.replace(f"data_dir: {tmp_path / 'var'}\n", f"data_dir: {data_dir}\n")
    path.write_text(text)
    return str(path)


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line the command said why on (stderr has the log records too)."""
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("scep-server: ")]
    assert len(said) == 1 and "Traceback" not in err, err
    return said[0]


@pytest.mark.parametrize(("where", "force"), [
    ("a-directory", False), ("a-directory", True), ("/proc/scep-backup.tar.gz", False), ("missing/b.tar.gz", False),
])  # fmt: skip
def test_backup_out_that_cannot_be_the_archive_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, force: bool
) -> None:
    config = _dev_config_file(tmp_path)
    assert main(["--config", config, "init"]) == 0
    (tmp_path / "a-directory").mkdir()
    out = tmp_path / where
    capsys.readouterr()
    assert main(["--config", config, "backup", "--out", str(out), *(["--force"] if force else [])]) == 2
    assert str(out) in _one_line_error(capsys)
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


@pytest.mark.parametrize("setting", ["12345", "{value: 12345}", "31415.9265", "{env: SCEP_X, value: 12345}"])
def test_a_secret_that_is_no_string_is_refused_without_showing_it(tmp_path: Path, setting: str) -> None:
    path = tmp_path / "scep.yaml"
    path.write_text(f"data_dir: {tmp_path}\nca:\n  key_passphrase: {setting}\n")
    with pytest.raises(ConfigError, match=r"ca\.key_passphrase(\.value)? must be a string") as refused:
        load_config(path, env={})
    assert "12345" not in str(refused.value) and "31415" not in str(refused.value)


def test_a_secret_file_path_with_a_nul_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="k.file must be a file's path, which cannot hold a NUL character"):
        SecretSource.parse({"file": "/run/secret\x00"}, "k")


def test_a_nul_in_data_dir_is_a_one_line_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _dev_config_file(tmp_path, data_dir='"\\x00"')
    assert main(["--config", config, "backup", "--out", str(tmp_path / "b.tar.gz")]) == 2
    assert "data_dir must be a path, which cannot hold a NUL character" in _one_line_error(capsys)
