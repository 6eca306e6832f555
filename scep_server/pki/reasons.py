"""Revocation reasons: the CRLReason codes of RFC 5280 §5.3.1 (7 is unassigned).

One enumeration serves the store (the integer code), CRLs and OCSP (:attr:`CRLReason.flag`), and the
CLI and admin API (:attr:`CRLReason.rfc_name`, :meth:`CRLReason.from_name`).
"""

from __future__ import annotations

from enum import IntEnum

from cryptography import x509

__all__ = ["FINAL_REASONS", "CRLReason"]


class CRLReason(IntEnum):
    """``CRLReason ::= ENUMERATED`` (RFC 5280 §5.3.1)."""

    UNSPECIFIED = 0
    KEY_COMPROMISE = 1
    CA_COMPROMISE = 2
    AFFILIATION_CHANGED = 3
    SUPERSEDED = 4
    CESSATION_OF_OPERATION = 5
    CERTIFICATE_HOLD = 6
    REMOVE_FROM_CRL = 8
    PRIVILEGE_WITHDRAWN = 9
    AA_COMPROMISE = 10

    @property
    def rfc_name(self) -> str:
        """The ASN.1 name, as RFC 5280 writes it: ``keyCompromise``, ``cACompromise``, ..."""
        return _RFC_NAMES[self]

    @property
    def flag(self) -> x509.ReasonFlags:
        """The reason as pyca/cryptography names it in CRL entries and OCSP answers."""
        return x509.ReasonFlags(self.rfc_name)

    @classmethod
    def from_name(cls, name: str) -> CRLReason:
        """The reason named ``name``, ignoring case, ``_`` and ``-`` (``keyCompromise``, ``key_compromise``).

        Raises ``ValueError`` for a name that is none.
        """
        wanted = _fold(name)
        for reason, rfc_name in _RFC_NAMES.items():
            if _fold(rfc_name) == wanted:
                return reason
        raise ValueError(f"{name!r} is not an RFC 5280 CRLReason")

    @classmethod
    def from_flag(cls, flag: x509.ReasonFlags) -> CRLReason:
        """The reason of a pyca/cryptography ``ReasonFlags`` value."""
        return cls.from_name(flag.value)


_RFC_NAMES = {
    CRLReason.UNSPECIFIED: "unspecified",
    CRLReason.KEY_COMPROMISE: "keyCompromise",
    CRLReason.CA_COMPROMISE: "cACompromise",
    CRLReason.AFFILIATION_CHANGED: "affiliationChanged",
    CRLReason.SUPERSEDED: "superseded",
    CRLReason.CESSATION_OF_OPERATION: "cessationOfOperation",
    CRLReason.CERTIFICATE_HOLD: "certificateHold",
    CRLReason.REMOVE_FROM_CRL: "removeFromCRL",
    CRLReason.PRIVILEGE_WITHDRAWN: "privilegeWithdrawn",
    CRLReason.AA_COMPROMISE: "aACompromise",
}
# What a certificate can be revoked with: removeFromCRL only lifts a certificateHold in a delta CRL, and
# revocations here are final, a hold included.
FINAL_REASONS = tuple(reason for reason in CRLReason if reason is not CRLReason.REMOVE_FROM_CRL)


def _fold(name: str) -> str:
    return name.strip().replace("_", "").replace("-", "").lower()
