"""Named API tokens in the store: unique names, looked up by hash, revoked once, last use written sparingly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from scep_server.errors import Conflict
from scep_server.store import Actor, Store

HASH_A = "a" * 64
HASH_B = "b" * 64
CLI = Actor("cli:operator", "cli")


def test_a_token_is_found_by_its_hash_only(store: Store) -> None:
    added = store.add_token(name="reader", scopes=["read"], token_hash=HASH_A, prefix="scep_abc", actor=CLI)
    assert (added.name, added.scopes, added.prefix) == ("reader", ("read",), "scep_abc")
    assert added.last_used_at is None and added.revoked_at is None
    assert store.token_by_hash(HASH_A) == added
    assert store.token_by_hash(HASH_B) is None


def test_a_name_is_taken_even_by_a_revoked_token(store: Store) -> None:
    store.add_token(name="ops", scopes=["read", "revoke"], token_hash=HASH_A, prefix="scep_abc", actor=CLI)
    store.revoke_token("ops", at=datetime.now(UTC), actor=CLI)
    with pytest.raises(Conflict):
        store.add_token(name="ops", scopes=["admin"], token_hash=HASH_B, prefix="scep_def", actor=CLI)
    assert [record.scopes for record in store.list_tokens()] == [("read", "revoke")]


def test_revoking_keeps_the_first_revocation_time(store: Store) -> None:
    store.add_token(name="ops", scopes=["admin"], token_hash=HASH_A, prefix="scep_abc", actor=CLI)
    first = datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert store.has_active_tokens()
    revoked = store.revoke_token("ops", at=first, actor=CLI)
    assert revoked is not None and revoked.revoked_at == first
    again = store.revoke_token("ops", at=first + timedelta(hours=1), actor=CLI)
    assert again is not None and again.revoked_at == first
    assert not store.has_active_tokens()
    assert store.revoke_token("nobody", at=first, actor=CLI) is None


def test_listing_is_by_name(store: Store) -> None:
    store.add_token(name="zeta", scopes=["read"], token_hash=HASH_A, prefix="scep_abc", actor=CLI)
    store.add_token(name="alpha", scopes=["revoke"], token_hash=HASH_B, prefix="scep_def", actor=CLI)
    assert [record.name for record in store.list_tokens()] == ["alpha", "zeta"]


def test_last_use_is_written_only_when_older_than_the_interval(store: Store) -> None:
    token = store.add_token(name="reader", scopes=["read"], token_hash=HASH_A, prefix="scep_abc", actor=CLI)
    used = datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)
    store.touch_token(token.id, at=used, unless_since=used - timedelta(minutes=1))
    soon = used + timedelta(seconds=30)
    store.touch_token(token.id, at=soon, unless_since=soon - timedelta(minutes=1))
    assert _last_used(store) == used
    later = used + timedelta(minutes=2)
    store.touch_token(token.id, at=later, unless_since=later - timedelta(minutes=1))
    assert _last_used(store) == later


def test_no_tokens_means_none_active(store: Store) -> None:
    assert not store.has_active_tokens()
    assert store.list_tokens() == []


def _last_used(store: Store) -> datetime | None:
    record = store.token_by_hash(HASH_A)
    assert record is not None
    return record.last_used_at


def test_creating_and_revoking_a_token_are_audited_in_the_chain(store: Store) -> None:
    store.add_token(name="ops", scopes=["read", "revoke"], token_hash=HASH_A, prefix="scep_abc", actor=CLI)
    store.revoke_token("ops", at=datetime.now(UTC), actor=Actor("token:root", "api"))
    store.revoke_token("ops", at=datetime.now(UTC), actor=CLI)  # changes nothing: not audited again
    rows = sorted(store.list_audit(), key=lambda row: row.id)
    assert [(row.action, row.actor, row.source, row.subject) for row in rows] == [
        ("token.create", "cli:operator", "cli", "token=ops"),
        ("token.revoke", "token:root", "api", "token=ops"),
    ]
    assert json.loads(rows[0].detail) == {"scopes": "read,revoke", "prefix": "scep_abc"}
    assert HASH_A not in repr(rows)  # never the token's digest
    assert store.verify_audit().intact
