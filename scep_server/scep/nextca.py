"""The GetNextCACert reply (RFC 8894 §4.7): the next CA's certificates, signed by the current keys.

The reply is a SignedData whose id-data eContent is a degenerate certificates-only SignedData (§3.4)
holding the next RA, CA and chain certificates. It carries one SignerInfo per current key it is given
(the CA's and the RA's), so that a client which trusts either one can verify it; every signer signs
through its :class:`~scep_server.scep.cms.CmsSigner`, never with a private key of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from asn1crypto import algos
from asn1crypto import cms as asn1_cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from scep_server.scep import cms
from scep_server.scep.types import DigestAlgorithm

__all__ = ["NEXT_CA_CERT", "NextCaSigner", "build_next_ca_response"]

NEXT_CA_CERT = "application/x-x509-next-ca-cert"  # the reply's Content-Type (RFC 8894 §4.7.1, §6.3)


@dataclass(frozen=True, slots=True)
class NextCaSigner:
    """A current key that vouches for the next certificates: its certificate, its signer (a CA key
    backend's, which may be a token's) and the digest of its SignerInfo."""

    cert: x509.Certificate
    key: cms.CmsSigner
    digest: DigestAlgorithm = DigestAlgorithm.SHA256


def build_next_ca_response(
    next_certificates: Sequence[x509.Certificate],
    signers: Sequence[NextCaSigner],
    *,
    now: datetime | None = None,
) -> bytes:
    """The encoded ContentInfo(SignedData) answering GetNextCACert (RFC 8894 §4.7.1).

    ``next_certificates`` go into the inner certificates-only SignedData (§3.4) in the order given:
    the next RA, the next CA, then any chain. Each of ``signers`` adds a SignerInfo with contentType,
    messageDigest and signingTime (``now``, default the current time) and its certificate to the
    outer certificates. ValueError when either sequence is empty or a signer's key is not its
    certificate's.
    """
    if not next_certificates:
        raise ValueError("a GetNextCACert reply needs at least one next certificate")
    if not signers:
        raise ValueError("a GetNextCACert reply needs at least one signer")
    for signer in signers:
        _check_key_matches(signer)
    content = _certificates_only(next_certificates)
    signing_time = now or datetime.now(UTC)
    signer_infos = [
        cms.signer_info(content, signer_cert=s.cert, signer_key=s.key, digest=s.digest, signing_time=signing_time)
        for s in signers
    ]
    signed = asn1_cms.SignedData({
        "version": "v1",
        "digest_algorithms": _digest_algorithms(signers),
        "encap_content_info": {"content_type": "data", "content": content},
        "certificates": _signer_certificates(signers),
        "signer_infos": signer_infos,
    })  # fmt: skip
    return bytes(asn1_cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def _certificates_only(certificates: Sequence[x509.Certificate]) -> bytes:
    """A degenerate certificates-only SignedData (RFC 8894 §3.4) listing ``certificates`` in the order given.

    :func:`~scep_server.scep.cms.certs_only` lists them in DER's sorted SET OF order; here the RA, CA,
    chain order of the caller stays, as clients read it (CMS needs DER only for signed attributes).
    """
    members = b"".join(c.public_bytes(serialization.Encoding.DER) for c in certificates)
    signed = asn1_cms.SignedData({
        "version": "v1",
        "digest_algorithms": [],
        "encap_content_info": {"content_type": "data"},
        "certificates": asn1_cms.CertificateSet(contents=members),  # the members' encodings, unsorted
        "signer_infos": [],
    })  # fmt: skip
    return bytes(asn1_cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump())


def _check_key_matches(signer: NextCaSigner) -> None:
    if _spki_der(signer.key.public_key()) != _spki_der(signer.cert.public_key()):
        subject = signer.cert.subject.rfc4514_string()
        raise ValueError(f"the signer key is not the key of its certificate ({subject})")


def _spki_der(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _digest_algorithms(signers: Sequence[NextCaSigner]) -> list[algos.DigestAlgorithm]:
    """Each signer's digest once, in the signers' order (RFC 5652 §5.1)."""
    names = dict.fromkeys(s.digest.value for s in signers)
    return [algos.DigestAlgorithm({"algorithm": name}) for name in names]


def _signer_certificates(signers: Sequence[NextCaSigner]) -> list[asn1_x509.Certificate]:
    """Every signer's certificate once, so that the reply verifies without GetCACert's answer at hand."""
    ders = dict.fromkeys(s.cert.public_bytes(serialization.Encoding.DER) for s in signers)
    return [asn1_x509.Certificate.load(der) for der in ders]
