"""The scrape-time gauges: what service/status.py reads from a real SQLite store and the CA directory, kept
for a few seconds, and how a store that does not answer shows (``scep_store_up`` 0, its gauges left out)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from scep_server.config import IntuneConfig, ServerConfig
from scep_server.service.status import OperationalStatus, Status, Validity
from scep_server.store import Store
from scep_server.store.status import CrlTimes, StoreSnapshot
from scep_server.web.status_metrics import GAUGES, readings
from tests.support.pki import CA

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
ISSUER = "CN=Status CA"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'scep-server.db'}") as opened:
        opened.migrate()
        yield opened


def _status(store: Store, ca_dir: Path, clock: Clock) -> OperationalStatus:
    return OperationalStatus(store, issuer=ISSUER, ca_dir=ca_dir, clock=clock, now=lambda: NOW)


def test_the_store_and_the_responder_certificate_are_read(store: Store, tmp_path: Path) -> None:
    ids = [store.outbox_add(kind="failureNotification", transaction_id=f"t{n}", payload={}) for n in range(4)]
    store.outbox_dead(ids[0], at=NOW, error="gone")
    store.outbox_delivered(ids[1], at=NOW)
    store.claim_transaction(profile="p", transaction_id="d1", message_type=19, csr_der=b"c", requester_ip=None)
    store.defer_transaction(profile="p", transaction_id="d1", next_attempt_at=NOW, error="down")
    store.claim_transaction(profile="p", transaction_id="not-deferred", message_type=19, csr_der=b"c",
                            requester_ip=None)
    for number, this_update in ((1, NOW - timedelta(hours=2)), (2, NOW - timedelta(hours=1))):
        store.store_crl(issuer=ISSUER, crl_number=number, der=b"crl", this_update=this_update,
                        next_update=this_update + timedelta(days=7), revoked_count=0)
    responder = CA.root("CN=Status CA").issue("CN=OCSP", not_before=NOW - timedelta(days=3),
                                               not_after=NOW + timedelta(days=27))
    (tmp_path / "ocsp.pem").write_bytes(responder.cert.public_bytes(serialization.Encoding.PEM))

    status = _status(store, tmp_path, Clock()).current()
    assert status.store == StoreSnapshot(
        outbox_pending=2, outbox_dead=1, deferred=1,
        crl=CrlTimes(NOW - timedelta(hours=1), NOW - timedelta(hours=1) + timedelta(days=7)),
    )
    assert status.ocsp_responder == Validity(NOW - timedelta(days=3), NOW + timedelta(days=27))


def test_answers_are_kept_for_a_few_seconds(store: Store, tmp_path: Path) -> None:
    clock = Clock()
    status = _status(store, tmp_path, clock)
    assert status.current().store == StoreSnapshot(0, 0, 0, None)
    store.outbox_add(kind="failureNotification", transaction_id="t", payload={})
    clock.now += 4.9
    assert status.current().store == StoreSnapshot(0, 0, 0, None)
    clock.now += 0.2
    assert status.current().store == StoreSnapshot(1, 0, 0, None)


def test_a_store_that_does_not_answer_leaves_the_rest(tmp_path: Path) -> None:
    unreadable = tmp_path / "not-a-database"
    unreadable.write_bytes(b"this is not SQLite" * 100)
    with Store.open(f"sqlite:///{unreadable}") as broken:
        status = _status(broken, tmp_path, Clock()).current()
    assert status.store is None and status.ocsp_responder is None  # no ocsp.pem in tmp_path either
    values = {reading.name: reading.value for reading in readings(status, ServerConfig())}
    assert values == {"scep_store_up": 0.0}


def test_the_readings_of_a_full_status() -> None:
    status = Status(
        NOW, StoreSnapshot(3, 2, 1, CrlTimes(NOW - timedelta(minutes=30), NOW + timedelta(days=7))),
        Validity(NOW - timedelta(days=2), NOW + timedelta(days=28)),
    )
    intune = replace(IntuneConfig(), tenant="t", client_id="c", revocation_poll_seconds=600)
    values = {reading.name: reading.value for reading in readings(status, replace(ServerConfig(), intune=intune))}
    assert values == {
        "scep_store_up": 1.0, "scep_intune_outbox_pending": 3.0, "scep_intune_outbox_dead": 2.0,
        "scep_deferred_validations_pending": 1.0,
        "scep_crl_this_update_timestamp_seconds": (NOW - timedelta(minutes=30)).timestamp(),
        "scep_crl_next_update_timestamp_seconds": (NOW + timedelta(days=7)).timestamp(),
        "scep_crl_age_seconds": 1800.0,
        "scep_ocsp_responder_not_after_seconds": (NOW + timedelta(days=28)).timestamp(),
        "scep_ocsp_responder_age_seconds": 2 * 86400.0,
        "scep_intune_revocation_sync_interval_seconds": 600.0,
    }
    assert set(values) == set(GAUGES)
    assert all(reading.documentation == GAUGES[reading.name] for reading in readings(status, ServerConfig()))


def test_without_a_crl_or_intune_those_gauges_are_left_out() -> None:
    status = Status(NOW, StoreSnapshot(0, 0, 0, None), None)
    assert {reading.name for reading in readings(status, ServerConfig())} == {
        "scep_store_up", "scep_intune_outbox_pending", "scep_intune_outbox_dead", "scep_deferred_validations_pending",
    }
