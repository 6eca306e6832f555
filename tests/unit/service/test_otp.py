"""OtpService: what the CLI, the admin API and the console mint, list, revoke and prune passwords with."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scep_server.challenge.otp import otp_hash
from scep_server.config import ChallengeConfig, ProfileConfig, ServerConfig
from scep_server.errors import InvalidInput, NotFound
from scep_server.service.otp import OtpService, OtpState, otp_profiles, parse_ttl
from scep_server.store import Store
from scep_server.store.otp import OtpRepository

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(f"sqlite:///{tmp_path / 'scep-server.db'}") as opened:
        opened.migrate()
        yield opened


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(store: Store, clock: Clock) -> OtpService:
    return OtpService(store, profiles=("kiosks", "laptops"), clock=clock)


def test_create_returns_the_passwords_and_stores_only_their_hashes(store: Store, service: OtpService) -> None:
    passwords = service.create("kiosks", timedelta(hours=2), "CN=kiosk-*", 3, "token:ops", "api")
    assert len(set(passwords)) == 3 and all(re.fullmatch(r"[A-Z2-7]{32}", p) for p in passwords)
    ledger = OtpRepository(store.engine)
    for password in passwords:
        record = ledger.find_otp(otp_hash(password))
        assert record is not None and record.profile == "kiosks" and record.subject_pattern == "CN=kiosk-*"
        assert record.expires_at == NOW + timedelta(hours=2) and record.created_by == "token:ops"
    [audit] = store.list_audit()
    assert (audit.action, audit.actor, audit.source) == ("otp.create", "token:ops", "api")
    assert not any(password in audit.detail for password in passwords)


@pytest.mark.parametrize(
    ("profile", "ttl", "pattern", "count", "message"),
    [
        ("printers", timedelta(hours=1), None, 1, "does not use the otp challenge"),
        ("kiosks", timedelta(seconds=59), None, 1, "1 minute to 30 days"),
        ("kiosks", timedelta(days=30, seconds=1), None, 1, "1 minute to 30 days"),
        ("kiosks", timedelta(hours=1), None, 0, "from 1 to 100"),
        ("kiosks", timedelta(hours=1), None, 101, "from 1 to 100"),
        ("kiosks", timedelta(hours=1), " ", 1, "subject pattern"),
        ("kiosks", timedelta(hours=1), "CN=a\nCN=b", 1, "subject pattern"),
        ("kiosks", timedelta(hours=1), "x" * 513, 1, "subject pattern"),
    ],
)
def test_create_refuses_what_is_out_of_range(
    store: Store, service: OtpService, profile: str, ttl: timedelta, pattern: str | None, count: int, message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        service.create(profile, ttl, pattern, count, "cli:op", "cli")
    assert store.list_audit() == []


def test_the_bounds_themselves_are_allowed(service: OtpService) -> None:
    assert len(service.create("kiosks", timedelta(minutes=1), None, 1, "cli:op", "cli")) == 1
    assert len(service.create("laptops", timedelta(days=30), None, 100, "cli:op", "cli")) == 100


def test_states_revocation_and_pruning(store: Store, service: OtpService, clock: Clock) -> None:
    service.create("kiosks", timedelta(hours=1), None, 2, "cli:op", "cli")
    first, second = sorted(service.list(), key=lambda record: record.id)
    assert [service.state(record) for record in (first, second)] == [OtpState.UNUSED, OtpState.UNUSED]
    revoked, now = service.revoke(first.id, actor="cli:op", source="cli")
    assert now and service.state(revoked) is OtpState.EXPIRED
    assert service.revoke(first.id, actor="cli:op", source="cli")[1] is False
    with pytest.raises(NotFound):
        service.revoke(second.id + 1, actor="cli:op", source="cli")
    clock.now = NOW + timedelta(days=31, hours=2)
    assert service.state(service.list(profile="kiosks")[0]) is OtpState.EXPIRED
    assert service.prune(actor="cli:op", source="cli") == 2
    assert service.list() == []


def test_the_otp_profiles_of_a_configuration() -> None:
    config = ServerConfig(profiles=(
        ProfileConfig(name="a", challenge=ChallengeConfig(type="otp")),
        ProfileConfig(name="b"),
        ProfileConfig(name="c", challenge=ChallengeConfig(type="otp")),
    ))
    assert otp_profiles(config) == ("a", "c")


@pytest.mark.parametrize(("text", "ttl"), [
    ("90s", timedelta(seconds=90)), ("15m", timedelta(minutes=15)), (" 1H ", timedelta(hours=1)),
    ("7d", timedelta(days=7)),
])
def test_lifetimes_parse(text: str, ttl: timedelta) -> None:
    assert parse_ttl(text) == ttl


@pytest.mark.parametrize("text", ["", "1", "h", "1w", "1.5h", "-1h", "1h30m"])
def test_other_lifetimes_are_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_ttl(text)
