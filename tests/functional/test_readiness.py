"""/readyz: store, CA/RA keys, Intune auth (for Intune profiles), CRL freshness and the credentials' expiry;
/livez and /healthz as before."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import REGISTRY

from scep_server.ca.keys.local import LocalKey
from scep_server.intune.health import AUTH_RECHECK_FAILING_SECONDS, AUTH_RECHECK_SECONDS, AppHealth
from scep_server.service.expiry import ExpiryRadar, server_credentials
from scep_server.service.readiness import REPORT_TTL, CrlDates, Readiness, check_crl, check_keys
from scep_server.store import Store
from tests.support.clocks import FakeClock

from .conftest import ScepTestServer
from .intune_env import IntuneEnv

STATIC_CHECKS = ["store", "ca_keys", "crl", "expiry:ca", "expiry:ra", "expiry:ocsp"]


def _readyz(server: ScepTestServer) -> tuple[int, dict[str, Any]]:
    response = server.http.get("/readyz")
    assert response.mimetype == "application/json" and response.headers["Cache-Control"] == "no-store"
    assert response.json is not None
    return response.status_code, response.json


def _checks(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in body["checks"]}


def test_a_healthy_server_is_ready(server: ScepTestServer) -> None:
    status, body = _readyz(server)
    assert status == 200 and body["ready"] is True
    assert [check["name"] for check in body["checks"]] == STATIC_CHECKS
    assert all(set(check) == {"name", "ok", "detail"} and check["ok"] for check in body["checks"])
    ca_days = (server.ca.ca_cert.not_valid_after_utc - datetime.now(UTC)).total_seconds() / 86400
    assert body["credentials"]["ca"]["daysLeft"] == pytest.approx(ca_days, abs=0.01)
    assert "days left" in _checks(body)["expiry:ra"]["detail"]
    assert "nextUpdate" in _checks(body)["crl"]["detail"]


def test_livez_and_healthz_keep_their_meaning(server: ScepTestServer) -> None:
    assert server.http.get("/livez").get_data(as_text=True) == "ok\n"
    healthz = server.http.get("/healthz")
    assert healthz.status_code == 200 and healthz.get_data(as_text=True) == "ok\n"


def test_the_expiry_gauge_is_set_at_startup(server: ScepTestServer) -> None:
    for credential, cert in (("ca", server.ca.ca_cert), ("ra", server.ca.ra_cert)):
        value = REGISTRY.get_sample_value("scep_credential_not_after_seconds", {"credential": credential})
        assert value == cert.not_valid_after_utc.timestamp()


# --- failing checks -------------------------------------------------------------------------------------


def _readiness(server: ScepTestServer, store: Store | None = None) -> Readiness:
    runtime = server.runtime
    return Readiness.of_server(runtime.config, runtime.ca, store or runtime.store, runtime.crls)


def test_an_unreachable_store_is_not_ready(server: ScepTestServer, tmp_path: Path) -> None:
    broken = Store.open(f"sqlite:///{tmp_path / 'no-such-dir' / 'db.sqlite'}")
    try:
        report = _readiness(server, broken).report()
    finally:
        broken.close()
    checks = {check.name: check for check in report.checks}
    assert not report.ready and not checks["store"].ok and checks["ca_keys"].ok
    assert report.to_json()["ready"] is False


def test_an_ra_key_that_does_not_match_its_certificate_is_not_ready(server: ScepTestServer) -> None:
    stranger = LocalKey(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    keyring = server.ca.ra_keyring
    mismatched = dataclasses.replace(keyring, current=dataclasses.replace(keyring.current, key=stranger))
    result = check_keys(dataclasses.replace(server.ca, ra_keyring=mismatched))
    assert not result.ok and "the RA key's signature does not verify with the RA certificate" in result.detail
    # OpenSSL either refuses the padding or (implicit rejection) decrypts to random bytes: both are caught.
    assert "the RA key decrypts to something else" in result.detail or "cannot decrypt" in result.detail
    assert check_keys(server.ca).ok


def test_a_stale_crl_is_not_ready(server: ScepTestServer) -> None:
    der = server.runtime.crls.current_der()
    next_update = x509.load_der_x509_crl(der).next_update_utc
    assert next_update is not None
    assert check_crl(der, CrlDates(), now=next_update - timedelta(seconds=1)).ok
    stale = check_crl(der, CrlDates(), now=next_update)
    assert not stale.ok and "the CRL is stale" in stale.detail


def test_an_expired_credential_is_not_ready(server: ScepTestServer) -> None:
    runtime = server.runtime
    after = runtime.ca.ra_cert.not_valid_after_utc + timedelta(seconds=1)
    radar = ExpiryRadar(server_credentials(runtime.ca, runtime.config.ca_dir, runtime.config.intune, None),
                        now=lambda: after)
    report = Readiness({}, radar).report()
    checks = {check.name: check for check in report.checks}
    assert not report.ready and not checks["expiry:ra"].ok and "expired" in checks["expiry:ra"].detail


def test_a_check_that_raises_is_reported_not_raised(server: ScepTestServer) -> None:
    def broken() -> Any:
        raise RuntimeError("the token was eaten")

    radar = ExpiryRadar({})
    report = Readiness({"store": broken}, radar).report()
    assert not report.ready and report.checks[0].detail == "RuntimeError: the token was eaten"


def test_a_burst_of_probes_costs_one_round(server: ScepTestServer) -> None:
    calls: list[int] = []
    clock = FakeClock(0.0)

    def counted() -> Any:
        calls.append(1)
        return check_keys(server.ca)

    readiness = Readiness({"ca_keys": counted}, ExpiryRadar({}), clock=clock)
    for _ in range(5):
        assert readiness.report().ready
    clock.advance(REPORT_TTL)
    readiness.report()
    assert len(calls) == 2


# --- Intune profiles (the in-process emulator, real MSAL) ----------------------------------------------------


def test_an_intune_server_is_ready_with_its_app_checked(intune_env: IntuneEnv) -> None:
    status, body = _readyz(intune_env.server)
    checks = _checks(body)
    assert status == 200, body
    assert checks["intune_auth"]["ok"] and "scep_challenge_provider" in checks["intune_auth"]["detail"]
    assert checks["expiry:client_secret"]["ok"] and 179 < body["credentials"]["client_secret"]["daysLeft"] <= 180


@pytest.fixture
def probed(intune_env: IntuneEnv) -> Iterator[tuple[Readiness, FakeClock[float]]]:
    clock = FakeClock(0.0)
    app = AppHealth(intune_env.config.intune, clock=clock, start=lambda work: work())
    readiness = Readiness({"intune_auth": app.auth}, ExpiryRadar({}), app=app, clock=clock)
    yield readiness, clock
    readiness.close()


def _auth(readiness: Readiness) -> tuple[bool, str]:
    report = readiness.report()
    (auth,) = [check for check in report.checks if check.name == "intune_auth"]
    return report.ready, auth.detail


def test_readiness_follows_entra_id_refusing_the_app_and_recovering(
    intune_env: IntuneEnv, probed: tuple[Readiness, FakeClock[float]]
) -> None:
    readiness, clock = probed
    assert _auth(readiness)[0]
    intune_env.state.inject_fault("token", auth_failure=True)
    clock.advance(AUTH_RECHECK_SECONDS - 1)
    assert _auth(readiness)[0]  # the last answer stands until it is due
    clock.advance(1)
    ready, detail = _auth(readiness)
    assert not ready and "Entra ID refused the app credentials: invalid_client" in detail
    intune_env.state.clear_faults()
    clock.advance(AUTH_RECHECK_FAILING_SECONDS)
    assert _auth(readiness)[0]


def test_readiness_fails_when_the_consent_is_revoked(
    intune_env: IntuneEnv, probed: tuple[Readiness, FakeClock[float]]
) -> None:
    readiness, clock = probed
    assert _auth(readiness)[0]
    client_id = intune_env.config.intune.client_id
    assert client_id is not None
    intune_env.state.set_intune_roles(client_id, ())
    clock.advance(AUTH_RECHECK_SECONDS)
    ready, detail = _auth(readiness)
    assert not ready and "lacks the scep_challenge_provider role" in detail


def test_the_client_secret_expiry_comes_from_graph(intune_env: IntuneEnv, tmp_path: Path) -> None:
    client_id = intune_env.config.intune.client_id
    secret = intune_env.config.intune.client_secret.resolve()
    assert client_id is not None and secret is not None
    soon = datetime.now(UTC) + timedelta(days=6)
    intune_env.state.register_app(client_id, secret=secret, secret_expires=soon.timestamp())
    app = AppHealth(intune_env.config.intune, start=lambda work: work())
    try:
        assert abs((app.secret_not_after() - soon).total_seconds()) < 1
    finally:
        app.close()
