"""The RA keyring on disk is only ever RA names; a rotation from a stale keyring is refused; renewal does
not loop at the CA's end; replaced RAs are destroyed by the renewal job once their grace is over; a live
authority neither reloads a broken change every second nor misses a change made while it loaded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scep_server.ca.authority import init_ca, load_ca, rotate_ra
from scep_server.ca.generations import load_generations, watched_files
from scep_server.ca.live import LiveAuthority, follow
from scep_server.ca.ra_keyring import index_path
from scep_server.config import CAConfig
from scep_server.errors import CAError
from scep_server.service.ra_renewal import RaRenewal

CONFIG = CAConfig(key_type="ec", curve="P-256", ra_validity_days=60, ra_renew_days=30, ra_grace_days=7)


def rotated(tmp_path: Path) -> Path:
    ca_dir = tmp_path / "ca"
    first = init_ca(ca_dir, CONFIG, None)
    rotate_ra(ca_dir, first, CONFIG, None)
    return ca_dir


@pytest.mark.parametrize("cert, key", [
    ("ca.pem", "ca.key"), ("ra.pem", "../../outside.key"), ("../ra.pem", "ra.key"), ("ocsp.pem", "ra.key"),
    ("ra-xyz.pem", "ra.key"),
])
def test_an_index_naming_anything_but_ra_files_is_refused(tmp_path: Path, cert: str, key: str) -> None:
    ca_dir = rotated(tmp_path)
    document = json.loads(index_path(ca_dir).read_text())
    document["previous"].append({"cert": cert, "key": key, "usable_until": "2000-01-01T00:00:00+00:00"})
    index_path(ca_dir).write_text(json.dumps(document))
    with pytest.raises(CAError, match="malformed"):
        load_ca(ca_dir, CONFIG, None)
    assert (ca_dir / "ca.key").exists() and (ca_dir / "ca.pem").exists()


def test_a_rotation_from_a_stale_keyring_is_refused_and_loses_nothing(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    stale = init_ca(ca_dir, CONFIG, None)
    served = rotate_ra(ca_dir, stale, CONFIG, None)  # another process rotated meanwhile
    with pytest.raises(CAError, match="rotated meanwhile"):
        rotate_ra(ca_dir, stale, CONFIG, None)
    assert load_ca(ca_dir, CONFIG, None).ra_cert == served.ra_cert


def live(ca_dir: Path) -> LiveAuthority:
    return follow(lambda: load_generations(ca_dir, CONFIG, None), lambda: tuple(watched_files(ca_dir, CONFIG)))


def test_renewal_does_not_loop_when_the_ca_ends_before_a_new_ra_would(tmp_path: Path) -> None:
    config = CAConfig(key_type="ec", curve="P-256", validity_days=40, ra_validity_days=60, ra_renew_days=30)
    first = init_ca(tmp_path / "ca", config, None)
    assert first.ra_cert.not_valid_after_utc <= first.ca_cert.not_valid_after_utc  # capped at the CA's end
    authority = follow(lambda: load_generations(tmp_path / "ca", config, None),
                       lambda: tuple(watched_files(tmp_path / "ca", config)))
    job = RaRenewal(authority, config, None)
    due_at = datetime.now(UTC) + timedelta(days=20)
    assert not job.renew_due(due_at) and not job.renew_due(due_at + timedelta(minutes=10))
    assert load_ca(tmp_path / "ca", config, None).ra_keyring.previous == ()


def test_the_renewal_job_destroys_replaced_ras_after_their_grace(tmp_path: Path) -> None:
    ca_dir = rotated(tmp_path)
    assert (ca_dir / "ra.key").exists()  # the replaced RA, in its grace period
    job = RaRenewal(live(ca_dir), CONFIG, None)
    job.renew_due(datetime.now(UTC) + timedelta(days=1))
    assert (ca_dir / "ra.key").exists()
    job.renew_due(datetime.now(UTC) + timedelta(days=CONFIG.ra_grace_days, hours=1))
    assert not (ca_dir / "ra.key").exists() and not (ca_dir / "ra.pem").exists()
    assert json.loads(index_path(ca_dir).read_text())["previous"] == []


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_change_that_does_not_load_is_not_loaded_again_every_second(tmp_path: Path) -> None:
    ca_dir = rotated(tmp_path)
    loads, clock = [], Clock()

    def load() -> object:
        loads.append(1)
        return load_generations(ca_dir, CONFIG, None)

    authority = LiveAuthority(load_generations(ca_dir, CONFIG, None), load,  # type: ignore[arg-type]
                              lambda: tuple(watched_files(ca_dir, CONFIG)), clock=clock)
    index_path(ca_dir).write_text("{broken")
    for _ in range(5):
        clock.now += 1.5
        authority.current()
    assert len(loads) == 1


def test_a_change_made_while_the_generations_load_is_seen_at_the_first_look(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    init_ca(ca_dir, CONFIG, None)
    rotations = []

    def load_then_rotate_elsewhere() -> object:
        loaded = load_generations(ca_dir, CONFIG, None)
        if not rotations:
            rotations.append(rotate_ra(ca_dir, loaded.active.ca, CONFIG, None))
        return loaded

    authority = follow(load_then_rotate_elsewhere, lambda: tuple(watched_files(ca_dir, CONFIG)))  # type: ignore[arg-type]
    assert authority.refresh().active.ca.ra_cert == rotations[0].ra_cert
