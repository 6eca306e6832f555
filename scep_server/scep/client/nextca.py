"""Client side of GetNextCACert (RFC 8894 §4.7): verify the reply, then tell the next RA, CA and chain apart.

The reply must be signed by a certificate the client trusts, or one a trusted CA issued: at least one
of its SignerInfos must verify (messageDigest over the eContent, the signature over the signed
attributes, RFC 5652 §5.4, §5.6) before anything in it is read. Every reply that cannot be accepted
raises :class:`~scep_server.scep.client.replies.ScepClientError`.

The HTTP exchange goes through a session the caller gives (a ``requests.Session`` fits), so this
package stays free of a transport of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm

from scep_server.errors import ScepError
from scep_server.scep import cms
from scep_server.scep.client.replies import ScepClientError
from scep_server.scep.nextca import NEXT_CA_CERT

__all__ = ["NEXT_CA_CERT", "HttpReply", "HttpSession", "NextCa", "get_next_ca_cert", "read_next_ca"]


@dataclass(frozen=True, slots=True)
class NextCa:
    """The verified next certificates (RFC 8894 §4.7.1), and the trusted signer that vouched for them.

    ``ra`` is the first certificate that is not a CA (no basicConstraints cA) and whose keyUsage, if it
    has one, allows keyEncipherment; None when there is none. ``ca`` is the first CA certificate
    (basicConstraints cA) that issued ``ra``; without an RA, or when none of them issued it, the one CA
    certificate that issued none of the other CA certificates (the lowest of a chain). ``chain`` is the
    rest, in the order of the reply. ``signer`` is the certificate whose SignerInfo verified.
    """

    ra: x509.Certificate | None
    ca: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    signer: x509.Certificate


class HttpReply(Protocol):
    """What :func:`get_next_ca_cert` reads of an HTTP response (``requests.Response`` has it)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content(self) -> bytes: ...


class HttpSession(Protocol):
    """What :func:`get_next_ca_cert` sends its request with (``requests.Session`` has it).

    Transport failures are OSErrors, as the exceptions of ``requests`` are."""

    def get(self, url: str, *, params: dict[str, str], timeout: float) -> HttpReply: ...


def get_next_ca_cert(
    base_url: str,
    trusted: Sequence[x509.Certificate],
    *,
    session: HttpSession,
    message: str | None = None,
    timeout: float = 30,
    now: datetime | None = None,
) -> NextCa:
    """GET ``base_url?operation=GetNextCACert`` and :func:`read_next_ca` the reply (RFC 8894 §4.7).

    ``base_url`` is the SCEP path (``http://host/scep``); ``message`` names a CA on a multi-CA server,
    as for GetCACert. The reply must be HTTP 200 with Content-Type ``application/x-x509-next-ca-cert``.
    """
    params = {"operation": "GetNextCACert"}
    if message is not None:
        params["message"] = message
    try:
        reply = session.get(base_url, params=params, timeout=timeout)
    except OSError as exc:
        raise ScepClientError(f"GetNextCACert: no response: {cms.short_reason(exc)}") from exc
    if reply.status_code != 200:
        body = reply.content[:200].decode("utf-8", errors="replace")
        raise ScepClientError(f"GetNextCACert: HTTP {reply.status_code}: {body}")
    media_type = reply.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
    if media_type != NEXT_CA_CERT:
        raise ScepClientError(f"GetNextCACert reply has Content-Type {media_type!r}, not {NEXT_CA_CERT}")
    return read_next_ca(reply.content, trusted, now=now)


def read_next_ca(der: bytes, trusted: Sequence[x509.Certificate], *, now: datetime | None = None) -> NextCa:
    """The next certificates of a GetNextCACert reply, once a trusted signer's signature verifies.

    A signer is trusted when its certificate is one of ``trusted`` (the CA and RA certificates GetCACert
    gave) and valid at ``now`` (an aware datetime, default the current time). A certificate merely issued
    by a trusted CA is not enough: any device holds one, and must not be able to vouch for a next CA.
    The server signs with both its CA key and its RA key, so a client trusting either verifies.
    Raises :class:`ScepClientError` for anything else.
    """
    moment = now or datetime.now(UTC)
    message, signer = _trusted_signature(_signers(der), trusted, moment)
    return _split(_next_certificates(message.content), signer)


def _signers(der: bytes) -> tuple[cms.SignedMessage, ...]:
    try:
        messages = cms.parse_each_signer(der)
    except ScepError as exc:
        raise ScepClientError(f"GetNextCACert reply is not a signed CMS message: {exc}") from exc
    if messages[0].content_type != "data":
        raise ScepClientError(f"GetNextCACert reply encapsulates {messages[0].content_type}, not id-data")
    return messages


def _trusted_signature(
    messages: Sequence[cms.SignedMessage], trusted: Sequence[x509.Certificate], now: datetime
) -> tuple[cms.SignedMessage, x509.Certificate]:
    """The first SignerInfo by a trusted signer that verifies, with that signer's certificate."""
    reasons = []
    for message in messages:
        signer = message.signer.to_x509()
        if signer is None:
            reasons.append("a signer certificate is not a valid X.509 certificate")
            continue
        distrust = _distrust(signer, trusted, now)
        if distrust is None:
            try:
                message.verify()
                return message, signer
            except ScepError as exc:
                distrust = f"the signature does not verify ({exc})"
        reasons.append(f"{_name_of(signer)}: {distrust}")
    raise ScepClientError("GetNextCACert reply has no valid signature by a trusted signer: " + "; ".join(reasons))


def _distrust(signer: x509.Certificate, trusted: Sequence[x509.Certificate], now: datetime) -> str | None:
    """Why ``signer`` is not trusted at ``now``; None when it is."""
    if not _valid_at(signer, now):
        return "the certificate is not valid now"
    if signer in trusted:
        return None
    return "not one of the trusted certificates"


def _name_of(cert: x509.Certificate) -> str:
    try:
        return cert.subject.rfc4514_string()
    except ValueError:  # cryptography reads the name only now, and this one does not parse
        return f"the signer of serial number {cert.serial_number}"


def _next_certificates(content: bytes | None) -> list[x509.Certificate]:
    if not content:
        raise ScepClientError("GetNextCACert reply has no encapsulated content")
    try:
        ders, _ = cms.read_certs_only(content)
        certificates = [x509.load_der_x509_certificate(der) for der in ders]
        for certificate in certificates:
            certificate.extensions  # noqa: B018 - parsed here: a malformed extension is this error too
    except (ScepError, ValueError, x509.InvalidVersion, IndexError, AttributeError) as exc:
        # IndexError, AttributeError: what asn1crypto may still raise on a content that is no ContentInfo.
        reason = cms.short_reason(exc)
        raise ScepClientError(f"GetNextCACert content is not a certificates-only SignedData: {reason}") from exc
    if not certificates:
        raise ScepClientError("GetNextCACert content holds no certificate")
    return list(dict.fromkeys(certificates))  # a certificate listed twice is one certificate


def _split(certificates: Sequence[x509.Certificate], signer: x509.Certificate) -> NextCa:
    """The RA, the CA and the rest, by the rules of :class:`NextCa`."""
    ra = next((c for c in certificates if not _is_ca(c) and _can_encipher(c)), None)
    cas = [c for c in certificates if _is_ca(c)]
    ca = _issuer_among(ra, cas) if ra is not None else None
    ca = ca or _lowest_ca(cas)
    chain = tuple(c for c in certificates if c is not ra and c is not ca)
    return NextCa(ra=ra, ca=ca, chain=chain, signer=signer)


def _issuer_among(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> x509.Certificate | None:
    return next((ca for ca in cas if _issued_by(cert, ca)), None)


def _lowest_ca(cas: Sequence[x509.Certificate]) -> x509.Certificate:
    if not cas:
        raise ScepClientError("GetNextCACert content holds no CA certificate")
    lowest = [ca for ca in cas if not any(other is not ca and _issued_by(other, ca) for other in cas)]
    if len(lowest) != 1:
        raise ScepClientError(f"GetNextCACert content holds {len(lowest)} candidates for the next CA, not one")
    return lowest[0]


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether ``issuer``'s name and key signed ``cert``."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _valid_at(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _can_encipher(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    except x509.ExtensionNotFound:
        return True
