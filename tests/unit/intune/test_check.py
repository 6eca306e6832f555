"""What `scep-server intune check` verifies: both tokens, the Intune role, discovery, the credential's expiry,
and with --probe one refused validateRequest; readiness' token check."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from scep_server.cli import main
from scep_server.config import SecretSource
from scep_server.errors import IntuneProtocolError
from scep_server.intune.check import (
    INTUNE_ROLE,
    PROBE_CSR,
    CheckResult,
    check_app_token,
    role_problem,
    run_checks,
    token_claims,
)

from .conftest import Harness
from .double import CLIENT_ID, INTUNE_APP_ID, INTUNE_RESOURCE, SECRET, TENANT, CloudDouble, Scripted

VALIDATE = "ScepActions/validateRequest"
MakeClient = Callable[..., Harness]
REFUSED = {"code": "CertificateRequestDecodingFailed", "errorDescription": "not a PKCS#10 request"}


def _by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {result.name: result for result in results if result.name != "discovery"}


# --- the token's claims ------------------------------------------------------------------------------------


def test_claims_are_read_without_verifying_the_signature() -> None:
    token = jwt.encode({"roles": [INTUNE_ROLE], "aud": "x"}, "a key nobody here knows, long enough", "HS256")
    assert token_claims(token)["roles"] == [INTUNE_ROLE]


@pytest.mark.parametrize("token", ["opaque-token", "a.b.c", ""])
def test_a_token_that_is_not_a_jwt_is_a_protocol_error(token: str) -> None:
    with pytest.raises(IntuneProtocolError, match="not a JWT"):
        token_claims(token)


@pytest.mark.parametrize(("claims", "listed"), [({}, "none"), ({"roles": []}, "none"),
                                                ({"roles": ["Other.Role"]}, "Other.Role"),
                                                ({"roles": "scep_challenge_provider"}, "none")])
def test_a_token_without_the_role_names_what_it_carries(claims: dict[str, object], listed: str) -> None:
    problem = role_problem(claims)
    assert problem is not None and f"roles: {listed}" in problem and "admin consent" in problem


def test_the_role_among_others_passes() -> None:
    assert role_problem({"roles": ["Other.Role", INTUNE_ROLE]}) is None


# --- readiness' token check -----------------------------------------------------------------------------


def test_the_readiness_check_asks_entra_id_every_time(make_client: MakeClient, cloud: CloudDouble) -> None:
    harness = make_client()
    for _ in range(2):
        assert check_app_token(harness.transport).ok
    assert cloud.token_requests[f"{INTUNE_RESOURCE}.default"] == 2  # fresh: never the cached token


def test_the_readiness_check_fails_without_the_role(make_client: MakeClient, cloud: CloudDouble) -> None:
    cloud.intune_roles = []
    result = check_app_token(make_client().transport)
    assert not result.ok and result.name == "intune_auth" and f"lacks the {INTUNE_ROLE} role" in result.detail


def test_the_readiness_check_fails_while_entra_id_refuses(make_client: MakeClient, cloud: CloudDouble) -> None:
    harness = make_client()
    cloud.token_script.append(Scripted(401, {"error": "invalid_client", "error_description": "AADSTS7000215: no"}))
    refused = check_app_token(harness.transport)
    assert not refused.ok and "Entra ID refused the app credentials: invalid_client" in refused.detail
    assert check_app_token(harness.transport).ok  # and recovers with the next answer


def test_the_readiness_check_reports_entra_id_down(make_client: MakeClient, cloud: CloudDouble) -> None:
    cloud.token_script.append(Scripted(503, {"error": "temporarily_unavailable", "error_description": "busy"}))
    result = check_app_token(make_client().transport)
    assert not result.ok and "cannot get a token from Entra ID" in result.detail


# --- the whole check ---------------------------------------------------------------------------------------


def _run(harness: Harness, *, probe: bool) -> list[CheckResult]:
    return list(run_checks(harness.transport, probe=probe))


def test_every_check_passes_and_the_probe_is_refused(make_client: MakeClient, cloud: CloudDouble) -> None:
    cloud.script[VALIDATE].append(Scripted(200, REFUSED))
    results = _run(make_client(), probe=True)
    assert not [r for r in results if r.failed], [r.line() for r in results]
    checks = _by_name(results)
    assert checks["intune-role"].ok and checks["probe"].ok
    assert "answered CertificateRequestDecodingFailed" in checks["probe"].detail
    request = cloud.intune_calls(VALIDATE)[0]["json"]["request"]
    assert request["transactionId"].startswith("intune-check-")
    assert request["certificateRequest"] == base64.b64encode(PROBE_CSR).decode()


def test_without_probe_nothing_is_sent_to_intune(make_client: MakeClient, cloud: CloudDouble) -> None:
    results = _run(make_client(), probe=False)
    assert "probe" not in _by_name(results) and cloud.intune_calls() == []


def test_a_probe_that_intune_accepts_fails(make_client: MakeClient, cloud: CloudDouble) -> None:
    probe = _by_name(_run(make_client(), probe=True))["probe"]  # the double answers Success by default
    assert probe.failed and "must refuse it" in probe.detail


def test_another_refusal_code_still_proves_the_path(make_client: MakeClient, cloud: CloudDouble) -> None:
    cloud.script[VALIDATE].append(Scripted(200, {"code": "ChallengePasswordMissing", "errorDescription": ""}))
    probe = _by_name(_run(make_client(), probe=True))["probe"]
    assert probe.ok and "CertificateRequestDecodingFailed was expected" in probe.detail


def test_a_forbidden_probe_names_the_permission(make_client: MakeClient, cloud: CloudDouble) -> None:
    cloud.script[VALIDATE].append(Scripted(403, {"code": "Forbidden", "errorDescription": "no role"}))
    probe = _by_name(_run(make_client(), probe=True))["probe"]
    assert probe.failed and "scep_challenge_provider" in probe.detail


def test_a_missing_role_fails_the_check_and_skips_the_probe(make_client: MakeClient, cloud: CloudDouble) -> None:
    cloud.intune_roles = []
    checks = _by_name(_run(make_client(), probe=True))
    assert checks["intune-token"].ok and checks["intune-role"].failed
    assert checks["probe"].skipped and not checks["probe"].failed
    assert cloud.intune_calls() == []


def test_refused_credentials_fail_both_tokens(make_client: MakeClient, cloud: CloudDouble) -> None:
    checks = _by_name(_run(make_client(client_secret=SecretSource(value="wrong")), probe=True))
    assert checks["graph-token"].failed and checks["intune-token"].failed
    assert "AADSTS7000215" in checks["graph-token"].detail
    assert checks["intune-role"].skipped and checks["probe"].skipped and checks["app-credential"].skipped


def test_an_expired_client_certificate_fails_the_credential_check(make_client: MakeClient, cloud: CloudDouble) -> None:
    harness = make_client(client_certificate=str(cloud.pki.app_cert_path), client_key=str(cloud.pki.app_key_path))
    cloud.mode = "certificate"
    not_after = cloud.pki.app_certificate.not_valid_after_utc
    fine = _by_name(list(run_checks(harness.transport, probe=False, now=lambda: not_after - timedelta(days=1))))
    assert fine["app-credential"].ok and "client certificate expires" in fine["app-credential"].detail
    late = _by_name(list(run_checks(harness.transport, probe=False, now=lambda: not_after + timedelta(seconds=1))))
    assert late["app-credential"].failed and "it has expired" in late["app-credential"].detail


def test_a_secret_whose_expiry_graph_does_not_tell_is_skipped(make_client: MakeClient) -> None:
    credential = _by_name(_run(make_client(), probe=False))["app-credential"]  # the double has no app lookup
    assert credential.skipped and "client secret's expiry is unknown" in credential.detail


# --- the command --------------------------------------------------------------------------------------------


def _config(tmp_path: Path, cloud: CloudDouble, **intune: object) -> Path:
    values = {"tenant": TENANT, "client_id": CLIENT_ID, "client_secret": SECRET, "authority": cloud.url,
              "graph_resource_url": cloud.url, "intune_resource_url": INTUNE_RESOURCE,
              "intune_app_id": INTUNE_APP_ID, "ca_bundle": str(cloud.pki.ca_bundle),
              "allowed_service_hosts": ["127.0.0.1"], **intune}
    path = tmp_path / "check.yaml"
    path.write_text(f"data_dir: {tmp_path / 'var'}\nintune: {json.dumps(values)}\n")
    return path


def test_the_command_exits_0_when_everything_works(
    tmp_path: Path, cloud: CloudDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    cloud.script[VALIDATE].append(Scripted(200, REFUSED))
    assert main(["--config", str(_config(tmp_path, cloud)), "intune", "check", "--probe"]) == 0
    out = capsys.readouterr().out
    assert "OK    intune-role:" in out and "OK    probe:" in out and "intune check passed" in out


def test_the_command_exits_1_naming_the_missing_consent(
    tmp_path: Path, cloud: CloudDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    cloud.intune_roles = []
    assert main(["--config", str(_config(tmp_path, cloud)), "intune", "check"]) == 1
    captured = capsys.readouterr()
    assert "FAIL  intune-role: the Intune token lacks the scep_challenge_provider role" in captured.out
    assert "intune check passed" not in captured.out
    assert "scep-server: intune check failed: intune-role\n" in captured.err


def test_the_command_exits_2_when_it_cannot_run(
    tmp_path: Path, cloud: CloudDouble, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.pem"
    config = _config(tmp_path, cloud, client_certificate=str(missing), client_key=str(missing))
    assert main(["--config", str(config), "intune", "check"]) == 2
    assert f"cannot read {missing}" in capsys.readouterr().err
    unconfigured = tmp_path / "none.yaml"
    unconfigured.write_text(f"data_dir: {tmp_path / 'var'}\n")
    assert main(["--config", str(unconfigured), "intune", "check"]) == 2
    assert "intune.tenant and intune.client_id are not set" in capsys.readouterr().err
    assert cloud.token_requests == {}


def test_credential_expiry_counts_days_from_now(make_client: MakeClient, cloud: CloudDouble) -> None:
    harness = make_client(client_certificate=str(cloud.pki.app_cert_path), client_key=str(cloud.pki.app_key_path))
    cloud.mode = "certificate"
    not_after = cloud.pki.app_certificate.not_valid_after_utc
    now = not_after - timedelta(days=12)
    credential = _by_name(list(run_checks(harness.transport, probe=False, now=lambda: now)))["app-credential"]
    assert credential.detail.endswith("(12.0 days left)") and f"{not_after:%Y-%m-%d}" in credential.detail
