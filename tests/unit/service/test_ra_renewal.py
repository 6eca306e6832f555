"""Automatic RA renewal: due in the RA's last ``ra_renew_days``, one rotation per due RA, counted, and a
failure leaves the RA that serves."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from scep_server.ca import authority
from scep_server.ca.authority import init_ca, load_ca
from scep_server.ca.generations import load_generations, watched_files
from scep_server.ca.live import LiveAuthority
from scep_server.config import CAConfig
from scep_server.errors import CAError
from scep_server.service.ra_renewal import RaRenewal
from scep_server.store import Store

CONFIG = CAConfig(key_type="ec", curve="P-256", ra_validity_days=60, ra_renew_days=30, ra_grace_days=7)


def renewals(result: str) -> float:
    return REGISTRY.get_sample_value("scep_ra_renewals_total", {"result": result}) or 0.0


def renewal(ca_dir: Path, config: CAConfig = CONFIG) -> tuple[RaRenewal, LiveAuthority]:
    live = LiveAuthority(
        load_generations(ca_dir, config, None), lambda: load_generations(ca_dir, config, None),
        lambda: tuple(watched_files(ca_dir, config)),
    )
    return RaRenewal(live, config, None), live


def test_the_ra_is_renewed_in_its_last_days_and_only_then(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    made_at = datetime.now(UTC)
    first = init_ca(tmp_path / "ca", CONFIG, None, now=made_at)
    job, live = renewal(tmp_path / "ca")
    before = renewals("renewed")
    assert not job.renew_due(made_at + timedelta(days=29))  # 31 days left
    assert live.current().ra_cert == first.ra_cert and renewals("renewed") == before

    due_at = first.ra_cert.not_valid_after_utc - timedelta(days=30)
    with caplog.at_level(logging.WARNING, logger="scep_server.service.ra_renewal"):
        assert job.renew_due(due_at)
    renewed = live.current()
    assert renewed.ra_cert != first.ra_cert
    assert renewed.ra_cert.not_valid_after_utc == due_at + timedelta(days=CONFIG.ra_validity_days)
    assert [(ra.cert, ra.usable_until) for ra in renewed.ra_keyring.previous] == [
        (first.ra_cert, due_at + timedelta(days=CONFIG.ra_grace_days))
    ]
    assert renewals("renewed") == before + 1
    assert any("RA renewed" in record.getMessage() for record in caplog.records)
    # On disk for every other process, and not due again.
    assert load_ca(tmp_path / "ca", CONFIG, None, now=due_at).ra_cert == renewed.ra_cert
    assert not job.renew_due(due_at + timedelta(minutes=10))
    assert renewals("renewed") == before + 1


def test_a_renewal_by_another_process_is_not_repeated(tmp_path: Path) -> None:
    made_at = datetime.now(UTC)
    first = init_ca(tmp_path / "ca", CONFIG, None, now=made_at)
    due_at = first.ra_cert.not_valid_after_utc - timedelta(days=1)
    job, live = renewal(tmp_path / "ca")
    elsewhere = authority.rotate_ra(tmp_path / "ca", first, CONFIG, None, now=due_at)
    assert not job.renew_due(due_at)
    assert live.current().ra_cert == elsewhere.ra_cert


def test_zero_days_turns_renewal_off(tmp_path: Path) -> None:
    config = replace(CONFIG, ra_renew_days=0)
    first = init_ca(tmp_path / "ca", config, None, now=datetime.now(UTC))
    job, live = renewal(tmp_path / "ca", config)
    assert not job.renew_due(first.ra_cert.not_valid_after_utc - timedelta(minutes=1))
    assert live.current().ra_cert == first.ra_cert


def test_a_failed_renewal_is_counted_and_the_ra_keeps_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = init_ca(tmp_path / "ca", CONFIG, None, now=datetime.now(UTC))
    job, live = renewal(tmp_path / "ca")

    def no_space(*args: object, **kwargs: object) -> None:
        raise CAError("disk full")

    monkeypatch.setattr("scep_server.service.ra_renewal.rotate_ra", no_space)
    before = renewals("failed")
    assert not job.renew_due(first.ra_cert.not_valid_after_utc - timedelta(days=2))
    assert renewals("failed") == before + 1
    assert live.current().ra_cert == first.ra_cert


def test_a_renewal_is_audited_as_the_background_job(tmp_path: Path, store: Store) -> None:
    made_at = datetime.now(UTC)
    first = init_ca(tmp_path / "ca", CONFIG, None, now=made_at)
    live = renewal(tmp_path / "ca")[1]
    job = RaRenewal(live, CONFIG, None, store=store)
    assert job.renew_due(first.ra_cert.not_valid_after_utc - timedelta(days=30))
    [row] = store.list_audit()
    assert (row.action, row.actor, row.source) == ("ca.rotate-ra", "server", "jobs")
    detail = json.loads(row.detail)
    assert detail["ra_serial"] == f"{live.current().ra_cert.serial_number:x}"
    assert detail["previous_ra_serial"] == f"{first.ra_cert.serial_number:x}"
    assert store.verify_audit().intact
