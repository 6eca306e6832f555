"""IssuancePolicy (scep_server/ca/policy.py): what a profile turns into, and the policies refused as nonsense."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from scep_server.ca.policy import IssuancePolicy
from scep_server.config import ChallengeConfig, ProfileConfig

from .support import policy


def test_policy_from_profile() -> None:
    profile = ProfileConfig(
        validity_days=30,
        backdate_minutes=5,
        hash="sha384",
        allowed_key_types=("rsa",),
        allowed_curves=("P-256",),
        key_usage=("digital_signature",),
        extended_key_usage=("client_auth", "1.2.3.4"),
        allow_sid_extension=True,
    )
    got = IssuancePolicy.from_profile(profile, crl_url="http://x/crl", ca_issuers_url="http://x/ca")
    assert got.validity == timedelta(days=30) and got.backdate == timedelta(minutes=5)
    assert got.hash_name == "sha384"
    assert got.allowed_key_types == frozenset({"rsa"}) and got.allowed_curves == frozenset({"P-256"})
    assert (got.min_rsa_bits, got.max_rsa_bits) == (2048, 8192)
    assert got.key_usage == ("digital_signature",) and got.extended_key_usage == ("client_auth", "1.2.3.4")
    assert got.allow_sid_extension and got.crl_url == "http://x/crl" and got.ca_issuers_url == "http://x/ca"
    assert got.ocsp_url is None
    assert not got.intune_validated and got.allowed_extended_key_usages == ()
    assert got.allowed_san_types == frozenset({"dns", "email", "upn", "uri", "ip"})
    assert (got.max_sans, got.max_subject_length, got.max_san_length) == (20, 512, 256)
    intune = dataclasses.replace(
        profile, challenge=ChallengeConfig(type="intune"), allowed_extended_key_usages=("smartcard_logon",),
        allowed_san_types=("dns",), max_sans=3, max_subject_length=100, max_san_length=50,
    )
    got = IssuancePolicy.from_profile(intune, crl_url=None, ca_issuers_url=None)
    assert got.intune_validated and got.allowed_extended_key_usages == ("smartcard_logon",)
    assert got.allowed_san_types == frozenset({"dns"})
    assert (got.max_sans, got.max_subject_length, got.max_san_length) == (3, 100, 50)
    with_ocsp = IssuancePolicy.from_profile(profile, crl_url=None, ca_issuers_url=None, ocsp_url="http://x/ocsp")
    assert with_ocsp.ocsp_url == "http://x/ocsp"


@pytest.mark.parametrize(
    "changes",
    [
        {"hash_name": "md5"},
        {"key_usage": ("key_cert_sign",)},
        {"extended_key_usage": ("nope",)},
        {"validity": timedelta(0)},
        {"backdate": timedelta(minutes=-1)},
        {"min_rsa_bits": 4096, "max_rsa_bits": 2048},
        {"allowed_extended_key_usages": ("nope",)},
        {"allowed_san_types": frozenset({"dirname"})},
        {"max_sans": -1},
        {"max_subject_length": 0},
        {"max_san_length": 0},
    ],
)
def test_policy_rejects_nonsense(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        policy(**changes)
