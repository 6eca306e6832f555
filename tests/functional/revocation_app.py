"""The app with the OCSP blueprint and the revocation objects, for tests, until ``create_app`` has them.

``build_revocation_runtime`` adds ``ocsp``, ``revocations`` and ``responder`` to a normal Runtime; the
CRL cache is the runtime's own, so GetCRL, ``/crl/...`` and OCSP share one revocation watch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path

from flask import Flask

from scep_server.ca.authority import init_ca
from scep_server.ca.names import parse_name
from scep_server.ca.responder import DelegatedResponder, ResponderPolicy, utcnow
from scep_server.config import ServerConfig
from scep_server.revocation import OcspResponder, WallClock
from scep_server.revocation_service import RevocationService
from scep_server.runtime import Runtime, build_runtime, ca_passphrase
from scep_server.web import create_app
from scep_server.web import ocsp as ocsp_web

from .conftest import ScepTestServer, make_config

RESPONDER_SUBJECT = "CN=scep-server OCSP Responder,O=scep-server tests"
OCSP_VALIDITY = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class RevocationRuntime(Runtime):
    ocsp: OcspResponder
    revocations: RevocationService
    responder: DelegatedResponder


@dataclass
class RevocationTestServer(ScepTestServer):
    runtime: RevocationRuntime


def build_revocation_runtime(config: ServerConfig, *, now: WallClock = utcnow) -> RevocationRuntime:
    base = build_runtime(config)
    policy = ResponderPolicy(parse_name(RESPONDER_SUBJECT), timedelta(days=30))
    responder = DelegatedResponder(config.ca_dir, base.ca, ca_passphrase(config), policy, now=now)
    responder.current()
    ocsp = OcspResponder(base.ca, base.store, responder, base.crls.watch, validity=OCSP_VALIDITY, now=now)
    revocations = RevocationService(base.store, issuer=base.ca.issuer_name, caches=(base.crls, ocsp))
    values = {f.name: getattr(base, f.name) for f in fields(Runtime)}
    return RevocationRuntime(**{**values, "ocsp": ocsp, "revocations": revocations, "responder": responder})


def create_revocation_app(config: ServerConfig, runtime: Runtime | None = None, *, background: bool = True) -> Flask:
    current = runtime or build_revocation_runtime(config)
    app = create_app(config, runtime_override=current, start_background=background)
    if ocsp_web.bp.name not in app.blueprints:
        app.register_blueprint(ocsp_web.bp)
    return app


@contextmanager
def revocation_server(tmp_path: Path, *, now: WallClock = utcnow) -> Iterator[RevocationTestServer]:
    """The functional test server (a real CA and SQLite under ``tmp_path``) with OCSP and revocation."""
    config = make_config(tmp_path)
    if not config.ca_dir.exists():
        init_ca(config.ca_dir, config.ca, None)
    runtime = build_revocation_runtime(config, now=now)
    app = create_revocation_app(config, runtime, background=False)
    try:
        yield RevocationTestServer(runtime, app.test_client(), tmp_path / "var")
    finally:
        runtime.close()
