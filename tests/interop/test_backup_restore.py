"""Backup → restore → enroll against ``scep-server serve`` (gunicorn) with micromdm's scepclient.

The backup is taken with the CLI while the first server is serving; ``restore`` puts it into a fresh
data directory, and a second server started there is the same CA: the client's certificates from before
are listed, a new enrollment works under the same CA certificate with a serial of its own.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.interop.harness import explain, run_scepclient, unique_cn
from tests.support.servers import CHALLENGE, LEGACY_PROFILE, ScepServerProcess, server_config

pytestmark = pytest.mark.interop


class RestoredServer(ScepServerProcess):
    """``restore --from ARCHIVE`` into a fresh data directory instead of ``init``, then ``serve``."""

    def __init__(self, tmp_path: Path, config_yaml: str, archive: Path) -> None:
        super().__init__(tmp_path, config_yaml)
        self.archive = archive
        self.restore_output = ""

    def _prepare(self) -> None:
        self.config_path.write_text(self.config_yaml, encoding="utf-8")
        done = self.cli("restore", "--from", str(self.archive))
        self.restore_output = done.stdout + done.stderr
        assert done.returncode == 0, self.restore_output


def test_backup_while_serving_restore_into_a_fresh_data_dir_and_enroll(
    scepclient_tool: str, tmp_path: Path
) -> None:
    archive = tmp_path / "scep-server-backup.tar.gz"
    before = []
    with ScepServerProcess(tmp_path / "first", server_config(tmp_path / "first" / "var")) as first:
        for _ in range(2):
            run = run_scepclient(first.url(LEGACY_PROFILE), tmp_path / "clients", CHALLENGE, unique_cn("before-backup"))
            assert run.ok, explain(run, first)
            before.append(run.certificate())
        done = first.cli("backup", "--out", str(archive))
        assert done.returncode == 0, done.stdout + done.stderr
        assert "encrypted with the CA passphrase" in done.stdout
        again = first.cli("backup", "--out", str(archive))
        assert again.returncode == 1 and "--force" in again.stderr
        ca_certificate = first.ca_certificate()
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600

    second_root = tmp_path / "second"
    with RestoredServer(second_root, server_config(second_root / "var"), archive) as second:
        assert "scep_transactions 2" in second.restore_output
        assert second.ca_certificate() == ca_certificate
        listing = second.certs_list()
        for cert in before:
            assert format(cert.serial_number, "x") in listing.lower()
        run = run_scepclient(second.url(LEGACY_PROFILE), tmp_path / "clients", CHALLENGE, unique_cn("after-restore"))
        assert run.ok, explain(run, second)
        after = run.certificate()
        assert after.issuer == ca_certificate.subject
        assert after.serial_number not in {cert.serial_number for cert in before}
        again = second.cli("restore", "--from", str(archive))
        assert again.returncode == 2 and "already holds a CA" in again.stderr
