"""Public CA material: the CA certificate (AIA caIssuers) and the CRL (CDP) of each CA generation.

``<name>`` is the generation's label: ``ca.name`` for the CA the server was set up with, and the label
``ca rollover stage`` gave a later one; a replaced generation keeps publishing its CRL."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Blueprint, Response, abort

from scep_server.service.issuers import IssuerServices
from scep_server.web.context import runtime

bp = Blueprint("ca_files", __name__)


@bp.get("/ca/<name>.crt")
def ca_der(name: str) -> Response:
    return Response(_ca_cert(name).public_bytes(Encoding.DER), mimetype="application/pkix-cert")


@bp.get("/ca/<name>.pem")
def ca_pem(name: str) -> Response:
    return Response(_ca_cert(name).public_bytes(Encoding.PEM), mimetype="application/x-pem-file")


@bp.get("/crl/<name>.crl")
def crl_der(name: str) -> Response:
    return Response(_services(name).crls.current_der(), mimetype="application/pkix-crl")


@bp.get("/crl/<name>.pem")
def crl_pem(name: str) -> Response:
    crl = x509.load_der_x509_crl(_services(name).crls.current_der())
    return Response(crl.public_bytes(Encoding.PEM), mimetype="application/x-pem-file")


def _ca_cert(name: str) -> x509.Certificate:
    return _services(name).generation.ca.ca_cert


def _services(name: str) -> IssuerServices:
    services = runtime().issuers.labelled(name)
    if services is None:
        abort(404)
    return services
