"""The TestMatrix catalogue: complete against Microsoft's CSV, and every row a valid Intune profile."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from scep_server.intune.contract import ChallengeSpec
from scep_server.simulator.matrix import PROFILES, ROWS, DeviceIdentity, Expect, Row, find_rows, slug

# Microsoft's acceptance matrix for third-party CAs, as published (tests/data/README.md).
REFERENCE = Path(__file__).resolve().parents[2] / "data" / "TestMatrix.csv"
FAILURE_ROWS = {"Challenge Authentication Failure", "Challenge Authentication Failure - 2",
                "Success Notification Failure", "Communication Failure"}


def _scenarios() -> list[str]:
    with REFERENCE.open(encoding="utf-8-sig", newline="") as handle:
        return [line["Scenario"].strip() for line in csv.DictReader(handle) if line["Scenario"].strip()]


def test_every_scenario_of_the_csv_has_a_row() -> None:
    assert [row.name for row in ROWS] == _scenarios()


def test_names_and_slugs_are_unique() -> None:
    assert len({row.name for row in ROWS}) == len({row.slug for row in ROWS}) == len(ROWS)


def test_the_failure_rows_inject_faults_and_expect_no_certificate() -> None:
    refused = {row.name for row in ROWS if row.expect is Expect.NO_CERTIFICATE}
    assert refused == FAILURE_ROWS
    assert all(row.faults for row in ROWS if row.name in FAILURE_ROWS)
    assert not any(row.faults for row in ROWS if row.name not in FAILURE_ROWS)


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_every_row_is_a_valid_profile(row: Row) -> None:
    identity = DeviceIdentity.random()
    spec = row.challenge_spec(identity, row.hashes[0])
    assert ChallengeSpec.from_json(spec.to_json()) == spec
    assert "{{" not in spec.subject and all("{{" not in value for _, value in spec.sans)
    assert spec.device_id == identity.device_id and spec.validity_days == row.profile.validity_days
    assert row.profile is PROFILES[row.profile.name]


def test_rows_served_by_the_sha1_profile() -> None:
    assert {row.name for row in ROWS if row.profile.name == "intune-sha1"} == {"Key Size: 1024", "Hash Alg: SHA-1"}
    assert {row.name for row in ROWS if row.profile.validity_days == 30} == {"Validation Period Configuration",
                                                                               "Renewal"}


def test_the_device_picks_the_strongest_hash_the_ca_offers() -> None:
    both = find_rows("Hash Alg: SHA-1 & SHA-2")[0]
    assert both.pick_hash({"AES", "SHA-1", "SHA-256"}) == "sha256"
    assert both.pick_hash({"SCEPStandard"}) == "sha256"
    assert both.pick_hash({"SHA-1"}) == "sha1"
    assert find_rows("hash-alg-sha-1")[0].pick_hash({"SHA-256"}) is None


def test_identity_renders_intune_variables() -> None:
    identity = DeviceIdentity.random()
    assert identity.render("CN={{UserName}},E={{EmailAddress}}") == (
        f"CN={identity.user_name},E={identity.email_address}")
    with pytest.raises(ValueError, match="OnPremisesSamAccountName"):
        identity.render("CN={{OnPremisesSamAccountName}}")


def test_imei_has_a_valid_luhn_check_digit() -> None:
    for _ in range(20):
        digits = [int(d) for d in DeviceIdentity.random().imei]
        assert len(digits) == 15
        doubled = [sum(divmod(d * 2, 10)) if i % 2 else d for i, d in enumerate(digits)]
        assert sum(doubled) % 10 == 0


def test_find_rows() -> None:
    assert find_rows("all") == ROWS
    assert find_rows("sn format: imei") == find_rows("sn-format-imei") == find_rows("SN Format: IMEI")
    with pytest.raises(KeyError):
        find_rows("SN Format: Shoe size")
    assert slug("Hash Alg: SHA-1 & SHA-2") == "hash-alg-sha-1-and-sha-2"
