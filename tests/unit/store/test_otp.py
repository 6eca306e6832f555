"""The one-time password ledger: kept as hashes, used once (across replicas on PostgreSQL), audited."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from scep_server.store import Actor, Store
from scep_server.store.otp import OtpRepository
from scep_server.store.tables import otp_challenges

CLI = Actor("cli:operator", "cli")
HASH_A = "a" * 64
HASH_B = "b" * 64
NOW = datetime.now(UTC)


@pytest.fixture
def ledger(store: Store) -> OtpRepository:
    return OtpRepository(store.engine)


def _add(ledger: OtpRepository, *hashes: str, profile: str = "otp", pattern: str | None = None,
         expires_at: datetime = NOW + timedelta(hours=1)) -> None:
    ledger.add_otps(profile=profile, secret_hashes=list(hashes), subject_pattern=pattern, expires_at=expires_at,
                    actor=CLI, ttl_seconds=3600)


def _audit(store: Store) -> list[tuple[str, str, str, dict[str, object]]]:
    rows = sorted(store.list_audit(), key=lambda row: row.id)
    return [(row.action, row.actor, row.subject, json.loads(row.detail)) for row in rows]


def test_passwords_are_stored_as_their_hashes_and_minting_is_audited_once(
    store: Store, ledger: OtpRepository
) -> None:
    _add(ledger, HASH_A, HASH_B, pattern="CN=device-*")
    with store.engine.connect() as conn:
        stored = conn.execute(select(otp_challenges.c.secret_hash, otp_challenges.c.created_by)).all()
    assert sorted(stored) == [(HASH_A, "cli:operator"), (HASH_B, "cli:operator")]
    found = ledger.find_otp(HASH_A)
    assert found is not None and found.profile == "otp" and found.subject_pattern == "CN=device-*"
    assert found.used_at is None and found.usable(NOW)
    [(action, actor, subject, detail)] = _audit(store)
    assert (action, actor, subject) == ("otp.create", "cli:operator", "otp profile=otp")
    assert detail["count"] == 2 and detail["ttl_seconds"] == 3600 and detail["profile"] == "otp"
    assert HASH_A not in json.dumps(detail) and HASH_B not in json.dumps(detail)
    assert store.verify_audit().intact


def test_a_password_is_consumed_once_and_the_use_is_audited(store: Store, ledger: OtpRepository) -> None:
    _add(ledger, HASH_A)
    assert ledger.consume_otp(secret_hash=HASH_A, profile="otp", transaction_id="tx-1", now=NOW)
    assert not ledger.consume_otp(secret_hash=HASH_A, profile="otp", transaction_id="tx-2", now=NOW)
    used = ledger.find_otp(HASH_A)
    assert used is not None and used.used_by_transaction == "tx-1" and used.used_at == NOW
    assert not used.usable(NOW)
    assert [(action, detail) for action, _, _, detail in _audit(store)][1:] == [
        ("otp.use", {"profile": "otp", "transaction_id": "tx-1"}),
    ]


def test_an_expired_another_profiles_or_unknown_password_is_not_consumed(ledger: OtpRepository) -> None:
    _add(ledger, HASH_A, expires_at=NOW + timedelta(minutes=1))
    assert not ledger.consume_otp(secret_hash=HASH_A, profile="otp", transaction_id="t", now=NOW + timedelta(minutes=1))
    assert not ledger.consume_otp(secret_hash=HASH_A, profile="other", transaction_id="t", now=NOW)
    assert not ledger.consume_otp(secret_hash=HASH_B, profile="otp", transaction_id="t", now=NOW)
    record = ledger.find_otp(HASH_A)
    assert record is not None and record.used_at is None
    assert ledger.consume_otp(secret_hash=HASH_A, profile="otp", transaction_id="t", now=NOW)


def test_only_the_transaction_that_used_a_password_gives_it_back(store: Store, ledger: OtpRepository) -> None:
    _add(ledger, HASH_A)
    assert ledger.consume_otp(secret_hash=HASH_A, profile="otp", transaction_id="tx-1", now=NOW)
    assert not ledger.release_otp(secret_hash=HASH_A, profile="otp", transaction_id="tx-2")
    assert not ledger.release_otp(secret_hash=HASH_A, profile="other", transaction_id="tx-1")
    assert ledger.release_otp(secret_hash=HASH_A, profile="otp", transaction_id="tx-1")
    assert not ledger.release_otp(secret_hash=HASH_A, profile="otp", transaction_id="tx-1")
    assert ledger.consume_otp(secret_hash=HASH_A, profile="otp", transaction_id="tx-2", now=NOW)
    assert [action for action, *_ in _audit(store)] == ["otp.create", "otp.use", "otp.release", "otp.use"]


def test_revoking_expires_an_unused_password_once(store: Store, ledger: OtpRepository) -> None:
    _add(ledger, HASH_A, HASH_B)
    first, second = (record.id for record in sorted(ledger.list_otps(), key=lambda record: record.id))
    revoked = ledger.revoke_otp(first, at=NOW, actor=CLI)
    assert revoked is not None and revoked[1] and revoked[0].expires_at == NOW
    again = ledger.revoke_otp(first, at=NOW + timedelta(seconds=1), actor=CLI)
    assert again is not None and not again[1] and again[0].expires_at == NOW
    assert not ledger.consume_otp(secret_hash=HASH_A, profile="otp", transaction_id="t", now=NOW)
    assert ledger.consume_otp(secret_hash=HASH_B, profile="otp", transaction_id="t", now=NOW)
    used = ledger.revoke_otp(second, at=NOW, actor=CLI)
    assert used is not None and not used[1]
    assert ledger.revoke_otp(second + 100, at=NOW, actor=CLI) is None
    assert [action for action, *_ in _audit(store)] == ["otp.create", "otp.revoke", "otp.use"]


def test_listing_is_newest_first_by_profile_and_pages_on(ledger: OtpRepository) -> None:
    _add(ledger, HASH_A)
    _add(ledger, HASH_B, profile="other")
    _add(ledger, "c" * 64)
    listed = ledger.list_otps()
    assert [record.profile for record in listed] == ["otp", "other", "otp"]
    assert [record.id for record in listed] == sorted((record.id for record in listed), reverse=True)
    assert [record.id for record in ledger.list_otps(profile="otp")] == [listed[0].id, listed[2].id]
    assert [record.id for record in ledger.list_otps(before_id=listed[0].id, limit=1)] == [listed[1].id]


def test_pruning_deletes_what_expired_before_the_cut_used_or_not(store: Store, ledger: OtpRepository) -> None:
    _add(ledger, HASH_A, expires_at=NOW - timedelta(days=2))
    _add(ledger, HASH_B, expires_at=NOW - timedelta(hours=1))
    _add(ledger, "c" * 64)
    assert ledger.prune_otps(expired_before=NOW - timedelta(days=1), actor=CLI) == 1
    assert ledger.find_otp(HASH_A) is None and ledger.find_otp(HASH_B) is not None
    assert ledger.prune_otps(expired_before=NOW - timedelta(days=1), actor=CLI) == 0
    assert [action for action, *_ in _audit(store)][-1] == "otp.prune"


def test_a_batch_is_1_to_100_hex_digests(ledger: OtpRepository) -> None:
    with pytest.raises(ValueError, match="from 1 to 100"):
        _add(ledger)
    with pytest.raises(ValueError, match="from 1 to 100"):
        _add(ledger, *(f"{n:064x}" for n in range(101)))
    with pytest.raises(ValueError, match="hex SHA-256"):
        _add(ledger, "abc")


@pytest.fixture
def replicas(postgres_url: str) -> Iterator[tuple[Store, Store]]:
    """Two stores on one PostgreSQL database, as two replicas of the server have."""
    with Store.open(postgres_url, pool_size=10) as first, Store.open(postgres_url, pool_size=10) as second:
        first.migrate()
        yield first, second


@pytest.mark.postgres
def test_replicas_racing_for_one_password_have_exactly_one_winner(replicas: tuple[Store, Store]) -> None:
    ledgers = [OtpRepository(replica.engine) for replica in replicas]
    assert replicas[0].engine is not replicas[1].engine
    _add(ledgers[0], HASH_A)
    contenders = 16
    start = threading.Barrier(contenders)

    def race(n: int) -> bool:
        start.wait()
        return ledgers[n % 2].consume_otp(secret_hash=HASH_A, profile="otp", transaction_id=f"tx-{n}", now=NOW)

    with ThreadPoolExecutor(contenders) as pool:
        won = list(pool.map(race, range(contenders)))
    assert won.count(True) == 1
    record = ledgers[1].find_otp(HASH_A)
    assert record is not None and record.used_by_transaction == f"tx-{won.index(True)}"
    uses = [row for row in replicas[1].list_audit() if row.action == "otp.use"]
    assert len(uses) == 1 and f'"tx-{won.index(True)}"' in uses[0].detail
    assert replicas[0].verify_audit().intact
