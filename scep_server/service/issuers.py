"""What each CA generation answers for the certificates it issued: its CRL and its OCSP responder.

After a rollover the previous CA keeps publishing its CRL (``/crl/<label>.crl``, the CDP of what it
issued) and answering OCSP for its certificates, while the active one does the same for the new ones.
:class:`Issuers` builds the services of a generation the first time it is needed (a generation staged or
activated while the server runs included) and routes by issuer: GetCRL and GetCert by the issuer name in
the request, OCSP by the CertID's issuer hashes (:class:`OcspRouter`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from scep_server.ca.generations import Generation
from scep_server.ca.live import LiveAuthority
from scep_server.ca.ocsp import IssuerHashes, MalformedOcspRequest, parse_request
from scep_server.ca.responder import DelegatedResponder
from scep_server.service.ocsp import OcspAnswer, OcspResponder
from scep_server.service.publishing import CrlCache


@dataclass(frozen=True, slots=True)
class IssuerServices:
    """The CRL and the OCSP responder of one generation."""

    generation: Generation
    crls: CrlCache
    ocsp: OcspResponder
    responder: DelegatedResponder
    hashes: IssuerHashes

    @property
    def label(self) -> str:
        return self.generation.label


ServicesFactory = Callable[[Generation], IssuerServices]


class Issuers:
    """The services of every generation the authority holds, each built once (by ``build``)."""

    def __init__(self, authority: LiveAuthority, build: ServicesFactory) -> None:
        self._authority = authority
        self._build = build
        self._lock = threading.Lock()
        self._built: dict[tuple[str, bytes], IssuerServices] = {}

    def active(self) -> IssuerServices:
        return self._services(self._authority.generations().active)

    def all(self) -> list[IssuerServices]:
        """Active first, then the retired generations, then a staged one."""
        return [self._services(generation) for generation in self._authority.generations().all()]

    def issued_by(self, issuer: x509.Name) -> IssuerServices | None:
        generation = self._authority.generations().issued_by(issuer)
        return self._services(generation) if generation is not None else None

    def labelled(self, label: str) -> IssuerServices | None:
        generation = self._authority.generations().labelled(label)
        return self._services(generation) if generation is not None else None

    def current_der(self) -> bytes:
        """The issuing generation's CRL (:class:`~scep_server.service.publishing.CrlSource`)."""
        return self.active().crls.current_der()

    def crl_der(self, issuer: x509.Name) -> bytes | None:
        """The current CRL of the generation named ``issuer``, or None."""
        services = self.issued_by(issuer)
        return services.crls.current_der() if services is not None else None

    def invalidate(self) -> None:
        """A certificate was revoked: every built CRL and OCSP cache follows (RevocationCache)."""
        for services in self._snapshot():
            services.crls.invalidate()
            services.ocsp.invalidate()

    def publish_due(self) -> bool:
        """The CRL publishing task over every generation; whether one was published."""
        return any([services.crls.publish_due() for services in self.all()])  # noqa: C419 - every one runs

    def renew_responders(self) -> None:
        """The OCSP responder renewal task over every generation."""
        for services in self.all():
            services.responder.current()

    def _services(self, generation: Generation) -> IssuerServices:
        key = (generation.label, generation.ca.ca_cert.fingerprint(hashes.SHA256()))
        with self._lock:
            services = self._built.get(key)
            if services is None:
                services = self._built[key] = self._build(generation)
            return services

    def _snapshot(self) -> list[IssuerServices]:
        with self._lock:
            return list(self._built.values())


class OcspRouter:
    """OCSP for every generation: a request goes to the responder of the CA its CertIDs name."""

    def __init__(self, issuers: Issuers) -> None:
        self._issuers = issuers

    def respond(self, der: bytes) -> OcspAnswer:
        return self._responder_for(der).respond(der)

    def cached(self, der: bytes) -> OcspAnswer | None:
        for services in self._issuers.all():
            answer = services.ocsp.cached(der)
            if answer is not None:
                return answer
        return None

    def invalidate(self) -> None:
        self._issuers.invalidate()

    def _responder_for(self, der: bytes) -> OcspResponder:
        """The responder of the first generation a CertID names; the active one (which answers malformed
        or unauthorized) when the request is unreadable or names none."""
        every = self._issuers.all()
        try:
            request = parse_request(der)
        except MalformedOcspRequest:
            return every[0].ocsp
        for services in every:
            if any(services.hashes.issued(cert_id) for cert_id in request.cert_ids):
                return services.ocsp
        return every[0].ocsp

