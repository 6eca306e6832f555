"""Public CA material: the CA certificate (AIA caIssuers) and the CRL (CDP)."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Blueprint, Response, abort

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
    _ca_cert(name)
    return Response(runtime().crls.current_der(), mimetype="application/pkix-crl")


@bp.get("/crl/<name>.pem")
def crl_pem(name: str) -> Response:
    _ca_cert(name)
    crl = x509.load_der_x509_crl(runtime().crls.current_der())
    return Response(crl.public_bytes(Encoding.PEM), mimetype="application/x-pem-file")


def _ca_cert(name: str) -> x509.Certificate:
    current = runtime()
    if name != current.ca.name:
        abort(404)
    return current.ca.ca_cert
