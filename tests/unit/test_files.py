from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from scep_server.errors import CAError
from scep_server.files import make_private_dir, read_file, stage, write_atomic


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_zero() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("umask_zero")
def test_a_file_gets_its_mode_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    path.write_bytes(b"old")
    path.chmod(0o666)
    write_atomic(path, b"new", 0o600)
    assert mode(path) == 0o600 and path.read_bytes() == b"new"


def test_a_file_is_never_visible_with_a_wider_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real_replace = os.replace

    def spy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        seen.append(mode(Path(src)))
        assert Path(src).read_bytes() == b"secret"
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    write_atomic(tmp_path / "k.key", b"secret", 0o600)
    assert seen == [0o600]


def test_a_staged_file_appears_only_when_committed(tmp_path: Path) -> None:
    target = tmp_path / "k.key"
    staged = stage(target, b"data", 0o600)
    assert not target.exists() and staged.tmp.exists()
    staged.commit()
    assert target.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]


def test_a_discarded_file_leaves_nothing(tmp_path: Path) -> None:
    stage(tmp_path / "k.key", b"data", 0o600).discard()
    assert list(tmp_path.iterdir()) == []


def test_write_failure_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "dir-in-the-way"
    target.mkdir()
    (target / "x").write_bytes(b"")
    with pytest.raises(CAError, match="cannot write"):
        write_atomic(target, b"data", 0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir-in-the-way"]


def test_read_file_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(CAError, match="certificate file .* does not exist"):
        read_file(tmp_path / "missing.pem", "certificate")


@pytest.mark.usefixtures("umask_zero")
def test_private_dirs_are_0700_and_open_ones_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_private_dir(tmp_path / "a" / "b")
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700
    (tmp_path / "open").mkdir(mode=0o755)
    with caplog.at_level(logging.WARNING):
        make_private_dir(tmp_path / "open")
    assert f"chmod 700 {tmp_path / 'open'}" in caplog.text
    assert mode(tmp_path / "open") == 0o755
