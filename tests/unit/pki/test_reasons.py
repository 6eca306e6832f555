"""The one CRLReason (RFC 5280 §5.3.1): codes, names, pyca flags, and what a certificate can be revoked with."""

from __future__ import annotations

import pytest
from cryptography import x509

from scep_server.pki.reasons import FINAL_REASONS, CRLReason


def test_codes_are_rfc_5280s_and_seven_is_unassigned() -> None:
    assert [int(reason) for reason in CRLReason] == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]
    with pytest.raises(ValueError):
        CRLReason(7)


@pytest.mark.parametrize("reason", list(CRLReason))
def test_every_reason_is_a_pyca_flag_and_back(reason: CRLReason) -> None:
    assert reason.flag.value == reason.rfc_name
    assert CRLReason.from_flag(reason.flag) is reason


def test_rfc_names_keep_rfc_5280s_spelling() -> None:
    assert CRLReason.CA_COMPROMISE.rfc_name == "cACompromise"
    assert CRLReason.AA_COMPROMISE.rfc_name == "aACompromise"
    assert CRLReason.REMOVE_FROM_CRL.flag is x509.ReasonFlags.remove_from_crl


@pytest.mark.parametrize(("name", "reason"), [
    ("keyCompromise", CRLReason.KEY_COMPROMISE),
    ("key_compromise", CRLReason.KEY_COMPROMISE),
    (" CA-COMPROMISE ", CRLReason.CA_COMPROMISE),
    ("cessationofoperation", CRLReason.CESSATION_OF_OPERATION),
])
def test_from_name_ignores_case_underscores_and_dashes(name: str, reason: CRLReason) -> None:
    assert CRLReason.from_name(name) is reason


def test_from_name_refuses_other_names() -> None:
    with pytest.raises(ValueError, match="'stolen' is not an RFC 5280 CRLReason"):
        CRLReason.from_name("stolen")


def test_final_reasons_are_all_but_remove_from_crl() -> None:
    assert CRLReason.REMOVE_FROM_CRL not in FINAL_REASONS
    assert set(FINAL_REASONS) == set(CRLReason) - {CRLReason.REMOVE_FROM_CRL}
