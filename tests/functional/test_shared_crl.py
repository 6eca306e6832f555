"""One CRL for every process: the publisher stores it, the others serve it, nobody serves a stale one.

Two ``CrlCache`` objects on one store stand for two processes (or replicas); they share a hand-moved
monotonic clock.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from scep_server.service.publishing import DEFAULT_CHECK_INTERVAL, CrlCache, RevocationWatch
from scep_server.service.revocation import RevocationService
from tests.support.clocks import FakeClock

from .conftest import Device, ScepTestServer

VALIDITY = timedelta(hours=168)
REFRESH = timedelta(hours=1)


def cache(server: ScepTestServer, ticks: FakeClock[float]) -> CrlCache:
    store = server.runtime.store
    return CrlCache(
        server.ca, store, validity=VALIDITY, refresh=REFRESH, watch=RevocationWatch(store, clock=ticks), clock=ticks
    )


def number(der: bytes) -> int:
    return x509.load_der_x509_crl(der).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def stored_number(server: ScepTestServer) -> int | None:
    record = server.runtime.store.latest_crl(server.ca.issuer_name)
    return None if record is None else record.crl_number


def test_every_process_serves_the_crl_the_publisher_stored(server: ScepTestServer) -> None:
    ticks = FakeClock(1000.0)
    publisher, reader = cache(server, ticks), cache(server, ticks)
    assert publisher.publish_due()
    published = publisher.current_der()
    assert stored_number(server) == number(published)
    assert reader.current_der() == published  # not a CRL of its own
    assert stored_number(server) == number(published)
    assert not publisher.publish_due()


def test_a_revocation_elsewhere_is_in_one_new_crl_that_everyone_serves(server: ScepTestServer) -> None:
    ticks = FakeClock(1000.0)
    publisher, reader = cache(server, ticks), cache(server, ticks)
    serial = server.enroll(Device()).serial_number
    assert publisher.publish_due()
    first = reader.current_der()
    RevocationService(server.runtime.store, issuer=server.ca.issuer_name, caches=[reader]).revoke(
        serial, reason="keyCompromise"
    )
    revoked = reader.current_der()  # the reader knows of a revocation the stored CRL lacks: it builds one
    assert number(revoked) == number(first) + 1 and stored_number(server) == number(revoked)
    assert x509.load_der_x509_crl(revoked).get_revoked_certificate_by_serial_number(serial) is not None
    ticks.now += DEFAULT_CHECK_INTERVAL
    assert publisher.current_der() == revoked  # noticed by count, found in the store
    ticks.now += 2.0
    assert not publisher.publish_due()  # already published: no second CRL for the same revocation


def test_the_publisher_renews_on_schedule_and_readers_follow(server: ScepTestServer) -> None:
    ticks = FakeClock(1000.0)
    publisher, reader = cache(server, ticks), cache(server, ticks)
    assert publisher.publish_due()
    before = reader.current_der()
    ticks.now += REFRESH.total_seconds()
    assert publisher.publish_due()
    renewed = publisher.current_der()
    assert number(renewed) == number(before) + 1
    assert reader.current_der() == renewed
    crl = x509.load_der_x509_crl(renewed)
    assert crl.next_update_utc is not None and crl.next_update_utc - crl.last_update_utc == VALIDITY


def test_readers_build_when_no_publisher_has_run_for_too_long(server: ScepTestServer) -> None:
    ticks = FakeClock(1000.0)
    reader = cache(server, ticks)
    first = reader.current_der()  # nothing stored yet: the reader builds the first one itself
    assert stored_number(server) == number(first)
    ticks.now += REFRESH.total_seconds()
    assert reader.current_der() == first  # within the publisher's grace
    ticks.now += REFRESH.total_seconds() / 4
    assert number(reader.current_der()) == number(first) + 1


def test_a_stored_crl_another_key_signed_is_not_served(
    server: ScepTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    store, ca = server.runtime.store, server.ca
    foreign_number = store.next_crl_number(ca.issuer_name)
    now = datetime.now(UTC).replace(microsecond=0)
    foreign = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.ca_cert.subject)
        .last_update(now)
        .next_update(now + VALIDITY)
        .add_extension(x509.CRLNumber(foreign_number), critical=False)
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    )
    store.store_crl(issuer=ca.issuer_name, crl_number=foreign_number, der=foreign.public_bytes(Encoding.DER),
                    this_update=now, next_update=now + VALIDITY, revoked_count=0)
    with caplog.at_level(logging.WARNING):
        served = x509.load_der_x509_crl(cache(server, FakeClock(1000.0)).current_der())
    assert served.is_signature_valid(ca.ca_cert.public_key())  # type: ignore[arg-type]
    assert number(served.public_bytes(Encoding.DER)) == foreign_number + 1
    assert f"stored CRL number {foreign_number}" in caplog.text
