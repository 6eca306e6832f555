"""Published CRLs: stored with their number and coverage, the newest found with one query, few kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from scep_server.errors import StoreError
from scep_server.store import Store
from scep_server.store.crls import KEEP
from scep_server.store.tables import published_crls

ISSUER = "CN=Test CA,O=scep-server"
OTHER_ISSUER = "CN=Other CA"
THIS_UPDATE = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


def publish(store: Store, number: int, issuer: str = ISSUER, revoked_count: int = 0) -> bytes:
    der = b"\x30\x03\x02\x01" + number.to_bytes(4, "big")
    store.store_crl(
        issuer=issuer, crl_number=number, der=der, this_update=THIS_UPDATE + timedelta(minutes=number),
        next_update=THIS_UPDATE + timedelta(days=7), revoked_count=revoked_count,
    )
    return der


def test_nothing_published_yet(store: Store) -> None:
    assert store.latest_crl(ISSUER) is None


def test_the_newest_crl_is_the_highest_number(store: Store) -> None:
    publish(store, 3, revoked_count=1)
    der = publish(store, 7, revoked_count=4)
    publish(store, 5, revoked_count=2)  # a slower builder finishing late does not become the newest
    record = store.latest_crl(ISSUER)
    assert record is not None
    assert (record.crl_number, record.der, record.revoked_count) == (7, der, 4)
    assert record.this_update == THIS_UPDATE + timedelta(minutes=7) and record.this_update.tzinfo is UTC
    assert record.next_update == THIS_UPDATE + timedelta(days=7)
    assert record.issuer == ISSUER and record.published_at.tzinfo is UTC


def test_newer_than_reads_only_a_newer_crl(store: Store) -> None:
    publish(store, 1)
    publish(store, 2)
    assert store.latest_crl(ISSUER, newer_than=2) is None
    newer = store.latest_crl(ISSUER, newer_than=1)
    assert newer is not None and newer.crl_number == 2


def test_issuers_are_apart(store: Store) -> None:
    publish(store, 9, issuer=OTHER_ISSUER)
    publish(store, 1)
    mine = store.latest_crl(ISSUER)
    assert mine is not None and mine.crl_number == 1
    assert store.latest_crl("CN=Nobody") is None


def test_only_the_newest_are_kept(store: Store) -> None:
    for number in range(1, KEEP + 6):
        publish(store, number)
    publish(store, 1, issuer=OTHER_ISSUER)
    c = published_crls.c
    with store.engine.connect() as conn:
        numbers = conn.execute(select(c.crl_number).where(c.issuer == ISSUER).order_by(c.crl_number)).scalars().all()
    assert numbers == list(range(6, KEEP + 6))
    assert store.latest_crl(OTHER_ISSUER) is not None  # another issuer's are not touched


def test_a_number_is_stored_once(store: Store) -> None:
    publish(store, 4)
    with pytest.raises(StoreError):
        publish(store, 4)


@pytest.mark.parametrize(
    ("number", "count", "der"), [(0, 0, b"\x30\x00"), (1, -1, b"\x30\x00"), (1, 0, b"")]
)
def test_arguments_are_checked(store: Store, number: int, count: int, der: bytes) -> None:
    with pytest.raises(ValueError):
        store.store_crl(issuer=ISSUER, crl_number=number, der=der, this_update=THIS_UPDATE,
                        next_update=THIS_UPDATE, revoked_count=count)


def test_times_must_be_aware(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone"):
        store.store_crl(issuer=ISSUER, crl_number=1, der=b"\x30\x00", this_update=datetime(2030, 1, 1),
                        next_update=THIS_UPDATE, revoked_count=0)
