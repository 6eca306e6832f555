"""The expiry radar: thresholds (30/14/7/1 days) logged once per threshold per day, the gauge, the sources."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from prometheus_client import REGISTRY

from scep_server.config import IntuneConfig, SecretSource
from scep_server.errors import CAError, IntuneError
from scep_server.service.expiry import (
    CertificateFile,
    ExpiryRadar,
    ExpiryWarnings,
    renewed_thresholds,
    server_credentials,
)
from tests.support import pki
from tests.support.clocks import FakeClock

from .conftest import ScepTestServer

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LOGGER = "scep_server.service.expiry"


@pytest.fixture
def clock() -> FakeClock[datetime]:
    return FakeClock(START)


def _radar(clock: FakeClock[datetime], **not_after: datetime) -> ExpiryRadar:
    return ExpiryRadar({name: (lambda moment=moment: moment) for name, moment in not_after.items()}, now=clock,
                       warnings=ExpiryWarnings())


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.name == LOGGER]
    caplog.clear()
    return lines


def test_nothing_is_said_with_more_than_30_days_left(
    clock: FakeClock[datetime], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    _radar(clock, ca=START + timedelta(days=30, seconds=1)).survey()
    assert _lines(caplog) == []


def test_each_threshold_is_logged_once_per_day(clock: FakeClock[datetime], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    radar = _radar(clock, ra=START + timedelta(days=30))
    for _ in range(3):
        radar.survey()
    assert _lines(caplog) == ["WARNING credential ra expires on 2030-01-31 12:00 UTC: 30.0 days left (under 30 days): "
                              "renew it"]
    clock.advance(3600)
    radar.survey()
    assert _lines(caplog) == []  # the same day
    clock.advance(12 * 3600)  # the next day (UTC)
    radar.survey()
    radar.survey()
    assert [line.split(": ")[1] for line in _lines(caplog)] == ["29.5 days left (under 30 days)"]


@pytest.mark.parametrize(("left", "threshold"), [(29.9, 30), (14, 14), (13.1, 14), (7, 7), (1.5, 7), (1, 1),
                                                 (0.01, 1)])
def test_the_tightest_threshold_crossed_is_named(
    clock: FakeClock[datetime], caplog: pytest.LogCaptureFixture, left: float, threshold: int
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    _radar(clock, ocsp=START + timedelta(days=left)).survey()
    (line,) = _lines(caplog)
    assert line.startswith("WARNING credential ocsp expires") and f"(under {threshold} days)" in line


def test_crossing_into_a_new_threshold_the_same_day_is_logged(
    clock: FakeClock[datetime], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    radar = _radar(clock, client_secret=START + timedelta(days=7, hours=1))
    radar.survey()
    clock.advance(2 * 3600)  # still the same day, now under 7 days
    radar.survey()
    clock.advance(1800)
    radar.survey()
    assert [line.rsplit("(", 1)[1] for line in _lines(caplog)] == ["under 14 days): renew it",
                                                                   "under 7 days): renew it"]


def test_an_expired_credential_is_an_error_once_a_day(
    clock: FakeClock[datetime], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    radar = _radar(clock, ca=START)
    radar.survey()
    radar.survey()
    assert _lines(caplog) == ["ERROR credential ca EXPIRED on 2030-01-01 12:00 UTC: renew it now"]
    (expiry,) = radar.survey()
    assert expiry.expired and not expiry.check().ok and "expired 0.0 days ago" in expiry.check().detail


def test_every_credential_is_logged_on_its_own(clock: FakeClock[datetime], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOGGER)
    _radar(clock, ca=START + timedelta(days=5), ra=START + timedelta(days=5), ocsp=START + timedelta(days=90)).survey()
    assert [line.split()[2] for line in _lines(caplog)] == ["ca", "ra"]


def test_known_expiries_are_exported_and_readiness_passes_until_expiry(clock: FakeClock[datetime]) -> None:
    not_after = START + timedelta(days=3, hours=12)
    (expiry,) = _radar(clock, client_certificate=not_after).survey()
    assert REGISTRY.get_sample_value("scep_credential_not_after_seconds",
                                     {"credential": "client_certificate"}) == not_after.timestamp()
    assert expiry.days_left == 3.5
    assert expiry.check().ok and expiry.check().detail == "3.5 days left (until 2030-01-05T00:00:00Z)"
    assert expiry.to_json() == {"notAfter": "2030-01-05T00:00:00Z", "daysLeft": 3.5, "problem": None}


def test_an_unknown_expiry_is_reported_not_failed(clock: FakeClock[datetime], caplog: pytest.LogCaptureFixture) -> None:
    def unreadable() -> datetime:
        raise IntuneError("Graph answered HTTP 403")

    caplog.set_level(logging.INFO, LOGGER)
    (expiry,) = ExpiryRadar({"client_secret": unreadable}, now=clock).survey()
    assert expiry.not_after is None and expiry.problem == "Graph answered HTTP 403"
    assert expiry.check().ok and expiry.check().detail == "expiry unknown: Graph answered HTTP 403"
    assert _lines(caplog) == []


def test_a_local_survey_leaves_out_what_graph_tells(clock: FakeClock[datetime]) -> None:
    radar = _radar(clock, ca=START + timedelta(days=90), client_secret=START + timedelta(days=90))
    assert [e.credential for e in radar.survey(local_only=True)] == ["ca"]
    assert [e.credential for e in radar.survey()] == ["ca", "client_secret"]


# --- sources ------------------------------------------------------------------------------------------------


def _write_certificate(path: Path, not_after: datetime) -> None:
    cert = pki.self_signed("CN=radar", pki.shared_key(), not_before=START - timedelta(days=1), not_after=not_after)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_a_certificate_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "ocsp.pem"
    source = CertificateFile(path)
    with pytest.raises(CAError):
        source.not_after()
    _write_certificate(path, START + timedelta(days=10))
    assert source.not_after() == START + timedelta(days=10)
    _write_certificate(path, START + timedelta(days=400))  # renewed (a new file of another size or time)
    assert source.not_after() == START + timedelta(days=400)


def test_the_server_credentials(server: ScepTestServer, tmp_path: Path) -> None:
    ca, ca_dir = server.ca, server.runtime.config.ca_dir
    static = server_credentials(ca, ca_dir, IntuneConfig(), None)
    assert list(static) == ["ca", "ra", "ocsp"]
    assert static["ca"]() == ca.ca_cert.not_valid_after_utc and static["ra"]() == ca.ra_cert.not_valid_after_utc
    assert static["ocsp"]() == pki.x509.load_pem_x509_certificate((ca_dir / "ocsp.pem").read_bytes()
                                                                  ).not_valid_after_utc
    certificate = tmp_path / "app.pem"
    _write_certificate(certificate, START + timedelta(days=20))
    app = IntuneConfig(tenant="t", client_id="c", client_certificate=str(certificate), client_key=str(certificate))
    assert server_credentials(ca, ca_dir, app, None)["client_certificate"]() == START + timedelta(days=20)
    secret = IntuneConfig(tenant="t", client_id="c", client_secret=SecretSource(value="s"))
    assert "client_secret" not in server_credentials(ca, ca_dir, secret, None)  # nobody to ask Graph


def test_the_self_renewing_ocsp_responder_is_warned_about_only_once_its_renewal_is_overdue(
    clock: FakeClock[datetime], caplog: pytest.LogCaptureFixture
) -> None:
    assert renewed_thresholds(30) == (7, 1)  # renewed with 10 of its 30 days left
    assert renewed_thresholds(7) == (1,)
    caplog.set_level(logging.INFO, LOGGER)
    warnings = ExpiryWarnings(per_credential={"ocsp": renewed_thresholds(30)})
    radar = ExpiryRadar({"ocsp": lambda: START + timedelta(days=25), "ra": lambda: START + timedelta(days=25)},
                        now=clock, warnings=warnings)
    radar.survey()
    assert [line.split()[2] for line in _lines(caplog)] == ["ra"]  # a fresh responder certificate: no warning
    clock.advance(19 * 86400)  # 6 days left: its renewal (at 10 days) is overdue
    radar.survey()
    assert [line.split()[2] for line in _lines(caplog)] == ["ocsp", "ra"]
