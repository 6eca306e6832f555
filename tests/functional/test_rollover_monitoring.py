"""What monitoring says across a CA rollover: once the next CA is activated, the expiry radar's ``ocsp``
credential and the /metrics gauges of the newest CRL and the OCSP responder describe the generation that
issues, not the one it replaced."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from scep_server.ca.generations import Generation, activate, stage_next
from scep_server.ca.responder import OCSP_CERT
from scep_server.service.expiry import CredentialExpiry
from tests.functional.conftest import ScepTestServer, make_config, serving
from tests.support import pki


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ScepTestServer]:
    with serving(make_config(tmp_path)) as started:
        yield started


def _rolled_over(server: ScepTestServer) -> Generation:
    config = server.runtime.config
    staged = stage_next(config.ca_dir, config.ca, None)
    activate(config.ca_dir, config.ca)
    assert server.runtime.authority.refresh().active.label == staged.label  # as every worker does within a second
    return staged


def _ocsp_expiry(server: ScepTestServer) -> CredentialExpiry:
    surveyed = {expiry.credential: expiry for expiry in server.runtime.readiness.radar.survey(local_only=True)}
    return surveyed["ocsp"]


def _gauges(server: ScepTestServer) -> dict[str, float]:
    """The unlabelled samples of /metrics."""
    response = server.http.get("/metrics")
    assert response.status_code == 200
    samples = (line.split() for line in response.get_data(as_text=True).splitlines() if not line.startswith("#"))
    return {fields[0]: float(fields[1]) for fields in samples if len(fields) == 2 and "{" not in fields[0]}


def test_the_radar_watches_the_issuing_generations_ocsp_responder(server: ScepTestServer) -> None:
    first = server.runtime.issuers.active().responder.current().cert
    assert _ocsp_expiry(server).not_after == first.not_valid_after_utc

    staged = _rolled_over(server)
    unmade = _ocsp_expiry(server)  # the new generation answers OCSP with a responder of its own, not made yet
    assert unmade.not_after is None and str(staged.directory / OCSP_CERT) in (unmade.problem or "")

    made = server.runtime.issuers.active().responder.current().cert
    made.verify_directly_issued_by(staged.ca.ca_cert)
    assert _ocsp_expiry(server).not_after == made.not_valid_after_utc

    renewed_until = datetime(2031, 6, 1, tzinfo=UTC)  # the file replaced, as the renewal task does
    renewed = pki.self_signed("CN=renewed responder", pki.shared_key(), not_before=renewed_until - timedelta(days=30),
                              not_after=renewed_until)
    (staged.directory / OCSP_CERT).write_bytes(renewed.public_bytes(serialization.Encoding.PEM))
    assert _ocsp_expiry(server).not_after == renewed_until


def test_the_status_gauges_follow_the_activated_generation(server: ScepTestServer) -> None:
    first_responder = server.runtime.issuers.active().responder.current().cert
    before = _gauges(server)  # the first scrape: no CRL published yet
    assert before["scep_ocsp_responder_not_after_seconds"] == first_responder.not_valid_after_utc.timestamp()
    assert "scep_crl_this_update_timestamp_seconds" not in before

    staged = _rolled_over(server)
    responder = server.runtime.issuers.active().responder.current().cert
    crl = x509.load_der_x509_crl(server.runtime.issuers.active().crls.current_der())
    assert crl.issuer == staged.ca.ca_cert.subject
    (server.runtime.config.ca_dir / OCSP_CERT).unlink()  # what the replaced generation's file says is not asked

    after = _gauges(server)
    assert after["scep_ocsp_responder_not_after_seconds"] == responder.not_valid_after_utc.timestamp()
    # the store keeps the times the CRL was made at, which it carries to the second
    assert after["scep_crl_this_update_timestamp_seconds"] == pytest.approx(crl.last_update_utc.timestamp(), abs=1)
    assert crl.next_update_utc is not None
    assert after["scep_crl_next_update_timestamp_seconds"] == pytest.approx(crl.next_update_utc.timestamp(), abs=1)
