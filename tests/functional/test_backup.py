"""Backup → restore → enroll: a restored server is the same CA with the same certificates, its CRL numbers
go on from where they were, and it never issues a serial twice. Restored into a fresh SQLite data
directory and into a fresh PostgreSQL schema, from a backup taken while the first server was running."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import URL, Engine

from scep_server.ca.authority import ca_exists
from scep_server.config import ServerConfig
from scep_server.errors import InvalidInput
from scep_server.runtime import build_runtime
from scep_server.service.backup import MANIFEST, create_backup, restore_backup
from scep_server.store import CertStatus, Store
from scep_server.store.backup import BackupRepository
from scep_server.web import create_app
from tests.functional.conftest import CONFIG, Device, ScepTestServer, make_config, serving
from tests.support.servers import fresh_schema, postgres_database  # noqa: F401  (a fixture)

PASSPHRASE = "backup-test-ca-passphrase"
ENCRYPTED_CONFIG = CONFIG.replace(
    "  key_size: 2048\n", "  key_size: 2048\n  key_passphrase: {{value: " + PASSPHRASE + "}}\n"
)


def backup_config(root: Path, database_url: str | None = None) -> ServerConfig:
    root.mkdir(parents=True, exist_ok=True)
    template = ENCRYPTED_CONFIG + (f"database_url: '{database_url}'\n" if database_url else "")
    return make_config(root, template)


@pytest.fixture
def original(tmp_path: Path) -> Iterator[ScepTestServer]:
    with serving(backup_config(tmp_path / "original")) as server:
        yield server


def _crl(server: ScepTestServer) -> x509.CertificateRevocationList:
    response = server.http.get(f"/crl/{server.runtime.config.ca.name}.crl")
    assert response.status_code == 200
    return x509.load_der_x509_crl(response.data)


def _crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def _populate(server: ScepTestServer) -> tuple[list[x509.Certificate], int]:
    issued = [server.enroll(Device(common_name=f"backup-device-{n}")) for n in range(3)]
    server.runtime.revocations.revoke(issued[0].serial_number, reason="keyCompromise")
    return issued, _crl_number(_crl(server))


def restored_servers(config: ServerConfig) -> Iterator[ScepTestServer]:
    runtime = build_runtime(config)
    try:
        app = create_app(config, runtime_override=runtime, start_background=False)
        yield ScepTestServer(runtime, app.test_client(), Path(config.data_dir))
    finally:
        runtime.close()


def _check_restored(server: ScepTestServer, original: ScepTestServer, issued: list[x509.Certificate],
                    crl_number: int) -> None:
    assert server.ca.ca_cert == original.ca.ca_cert
    assert server.ca.ra_cert == original.ca.ra_cert
    statuses = {cert.serial_number: server.runtime.store.get_certificate(cert.serial_number) for cert in issued}
    assert all(record is not None for record in statuses.values())
    assert [statuses[c.serial_number].status for c in issued] == [  # type: ignore[union-attr]
        CertStatus.REVOKED, CertStatus.VALID, CertStatus.VALID
    ]
    assert [statuses[c.serial_number].der for c in issued] == [  # type: ignore[union-attr]
        c.public_bytes(Encoding.DER) for c in issued
    ]
    assert _crl_number(_crl(server)) == crl_number, "the restored server serves the CRL it had published"
    server.runtime.revocations.revoke(issued[1].serial_number, reason="superseded")
    crl = _crl(server)
    assert _crl_number(crl) == crl_number + 1, "CRL numbers go on from the backup's"
    assert {entry.serial_number for entry in crl} == {issued[0].serial_number, issued[1].serial_number}
    assert crl.is_signature_valid(server.ca.ca_cert.public_key())  # type: ignore[arg-type]
    new = server.enroll(Device(common_name="after-restore"))
    assert new.serial_number not in {cert.serial_number for cert in issued}
    assert server.runtime.store.count_certificates() == len(issued) + 1
    assert server.runtime.ocsp is not None


def test_backup_then_restore_into_a_fresh_sqlite_data_dir_keeps_serving(
    original: ScepTestServer, tmp_path: Path
) -> None:
    issued, crl_number = _populate(original)
    archive = tmp_path / "backup.tar.gz"
    result = create_backup(original.runtime.config, original.runtime.store.engine, PASSPHRASE.encode(), archive)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert result.rows["certificates"] == 3 and result.keys_encrypted
    target = backup_config(tmp_path / "restored")
    restored = restore_backup(target, engine_for(target), PASSPHRASE.encode(), archive)
    assert restored.rows["certificates"] == 3
    assert stat.S_IMODE((target.ca_dir / "ca.key").stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in (target.ca_dir / "ca.key").read_bytes()
    for server in restored_servers(target):
        _check_restored(server, original, issued, crl_number)


def test_a_sqlite_backup_restores_into_postgresql(
    original: ScepTestServer, tmp_path: Path, postgres_database: URL  # noqa: F811
) -> None:
    issued, crl_number = _populate(original)
    archive = tmp_path / "backup.tar.gz"
    create_backup(original.runtime.config, original.runtime.store.engine, PASSPHRASE.encode(), archive)
    with fresh_schema(postgres_database) as url:
        target = backup_config(tmp_path / "restored", database_url=url)
        restore_backup(target, engine_for(target), PASSPHRASE.encode(), archive)
        for server in restored_servers(target):
            _check_restored(server, original, issued, crl_number)
            # and back: a PostgreSQL backup restores into SQLite
            second = tmp_path / "from-postgres.tar.gz"
            create_backup(target, server.runtime.store.engine, PASSPHRASE.encode(), second)
        again = backup_config(tmp_path / "again")
        restored = restore_backup(again, engine_for(again), PASSPHRASE.encode(), second)
        assert restored.rows["certificates"] == 4


def test_restore_refuses_a_data_dir_that_has_a_ca(original: ScepTestServer, tmp_path: Path) -> None:
    archive = tmp_path / "backup.tar.gz"
    create_backup(original.runtime.config, original.runtime.store.engine, PASSPHRASE.encode(), archive)
    with pytest.raises(InvalidInput, match="already holds a CA"):
        restore_backup(original.runtime.config, original.runtime.store.engine, PASSPHRASE.encode(), archive)


def test_restore_refuses_a_database_with_data(original: ScepTestServer, tmp_path: Path) -> None:
    original.enroll(Device(common_name="already-here"))
    archive = tmp_path / "backup.tar.gz"
    create_backup(original.runtime.config, original.runtime.store.engine, PASSPHRASE.encode(), archive)
    target = backup_config(tmp_path / "restored", database_url=original.runtime.config.effective_database_url)
    with pytest.raises(InvalidInput, match="database already holds data"):
        restore_backup(target, original.runtime.store.engine, PASSPHRASE.encode(), archive)
    assert not ca_exists(target.ca_dir)


def test_a_wrong_passphrase_restores_nothing(original: ScepTestServer, tmp_path: Path) -> None:
    archive = tmp_path / "backup.tar.gz"
    create_backup(original.runtime.config, original.runtime.store.engine, PASSPHRASE.encode(), archive)
    target = backup_config(tmp_path / "restored")
    engine = engine_for(target)
    with pytest.raises(Exception, match="(?i)passphrase|password|decrypt"):
        restore_backup(target, engine, b"not-the-passphrase", archive)
    assert not ca_exists(target.ca_dir)
    assert BackupRepository(engine).is_empty()


def test_an_altered_archive_is_refused(original: ScepTestServer, tmp_path: Path) -> None:
    original.enroll(Device(common_name="to-alter"))
    archive = tmp_path / "backup.tar.gz"
    create_backup(original.runtime.config, original.runtime.store.engine, PASSPHRASE.encode(), archive)
    altered = tmp_path / "altered.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(altered, "w:gz") as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == "database/certificates.jsonl":  # the same size: only the digest tells
                data = data.replace(b'"valid"', b'"VALID"', 1)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    target = backup_config(tmp_path / "restored")
    with pytest.raises(InvalidInput, match="does not match its manifest"):
        restore_backup(target, engine_for(target), PASSPHRASE.encode(), altered)
    assert not ca_exists(target.ca_dir)


def test_an_archive_naming_a_path_outside_its_layout_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    manifest = {"format": "scep-server-backup", "format_version": 1, "schema_revision": "0006", "rows": {},
                "sha256": {"../../etc/passwd": "0" * 64}}
    payload = json.dumps(manifest).encode()
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    target = backup_config(tmp_path / "restored")
    with pytest.raises(InvalidInput, match="outside its layout"):
        restore_backup(target, engine_for(target), PASSPHRASE.encode(), archive)
    assert not os.path.exists(tmp_path / "etc")


_OPENED: list[Store] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while _OPENED:
        _OPENED.pop().close()


def engine_for(config: ServerConfig) -> Engine:
    Path(config.data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    _OPENED.append(Store.open(config.effective_database_url))
    return _OPENED[-1].engine
