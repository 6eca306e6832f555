"""LiveAuthority: a process follows RA rotations on disk within its check interval, and keeps what it has
when the keyring on disk does not load."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scep_server.ca.authority import init_ca, load_ca, rotate_ra
from scep_server.ca.generations import load_generations, watched_files
from scep_server.ca.live import LiveAuthority, as_live
from scep_server.ca.ra_keyring import index_path
from tests.unit.ca.support import CA_KINDS

CONFIG = CA_KINDS["p256"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def live(ca_dir: Path, clock: Clock) -> LiveAuthority:
    return LiveAuthority(
        load_generations(ca_dir, CONFIG, None), lambda: load_generations(ca_dir, CONFIG, None),
        lambda: tuple(watched_files(ca_dir, CONFIG)), clock=clock,
    )


def test_a_rotation_on_disk_is_served_after_the_check_interval(tmp_path: Path) -> None:
    ca_dir, clock = tmp_path / "ca", Clock()
    first = init_ca(ca_dir, CONFIG, None, now=datetime.now(UTC))
    authority = live(ca_dir, clock)
    rotated = rotate_ra(ca_dir, load_ca(ca_dir, CONFIG, None), CONFIG, None)  # another process's rotation
    clock.now += 0.5
    assert authority.current().ra_cert == first.ra_cert  # looked less than a second ago
    clock.now += 0.6
    current = authority.current()
    assert current.ra_cert == rotated.ra_cert
    assert [ra.cert for ra in current.ra_keyring.previous] == [first.ra_cert]


def test_a_keyring_that_does_not_load_keeps_the_one_served(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ca_dir, clock = tmp_path / "ca", Clock()
    init_ca(ca_dir, CONFIG, None, now=datetime.now(UTC))
    authority = live(ca_dir, clock)
    served = rotate_ra(ca_dir, load_ca(ca_dir, CONFIG, None), CONFIG, None)
    clock.now += 1.5
    assert authority.current().ra_cert == served.ra_cert
    good_index = index_path(ca_dir).read_bytes()
    index_path(ca_dir).write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="scep_server.ca.live"):
        for _ in range(3):
            clock.now += 1.5
            assert authority.current().ra_cert == served.ra_cert
    assert len([r for r in caplog.records if "did not load" in r.getMessage()]) == 1  # once per change
    index_path(ca_dir).write_bytes(good_index)
    rotated = rotate_ra(ca_dir, load_ca(ca_dir, CONFIG, None), CONFIG, None)  # a good keyring again: picked up
    clock.now += 1.5
    assert authority.current().ra_cert == rotated.ra_cert


def test_an_ra_of_another_ca_is_refused(tmp_path: Path) -> None:
    ca_dir, other_dir, clock = tmp_path / "ca", tmp_path / "other", Clock()
    first = init_ca(ca_dir, CONFIG, None, now=datetime.now(UTC))
    other = init_ca(other_dir, CONFIG, None, now=datetime.now(UTC))
    authority = live(ca_dir, clock)
    rotate_ra(other_dir, other, CONFIG, None)
    for name in ("ra-keyring.json", *(p.name for p in other_dir.glob("ra-*.*"))):
        (ca_dir / name).write_bytes((other_dir / name).read_bytes())
    clock.now += 1.5
    assert authority.current().ra_cert == first.ra_cert


def test_refresh_looks_at_once(tmp_path: Path) -> None:
    ca_dir, clock = tmp_path / "ca", Clock()
    init_ca(ca_dir, CONFIG, None, now=datetime.now(UTC))
    authority = live(ca_dir, clock)
    rotated = rotate_ra(ca_dir, load_ca(ca_dir, CONFIG, None), CONFIG, None)
    assert authority.refresh().active.ca.ra_cert == rotated.ra_cert


def test_a_fixed_authority_never_changes(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    first = init_ca(ca_dir, CONFIG, None, now=datetime.now(UTC))
    authority = as_live(first)
    assert as_live(authority) is authority
    rotate_ra(ca_dir, first, CONFIG, None)
    assert authority.refresh().active.ca.ra_cert == first.ra_cert
