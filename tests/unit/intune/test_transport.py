"""IntuneTransport against the HTTPS double with real MSAL: tokens, discovery, retries, TLS, proxy, logs."""

from __future__ import annotations

import base64
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests

from scep_server.config import SecretSource
from scep_server.errors import IntuneAuthError, IntuneProtocolError, IntuneUnavailable
from scep_server.intune.transport import build_session, proxy_url, system_ca_bundle

from .conftest import CHALLENGE, Harness, config_for
from .double import INTUNE_RESOURCE, SECRET, CloudDouble, Scripted, ThrowawayPKI

VALIDATE = "ScepActions/validateRequest"
MakeClient = Callable[..., Harness]


# --- tokens (intune-api.md §2) ---------------------------------------------------------------------------


def test_secret_auth_token_reused_across_100_calls(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    harness = make_client()
    for n in range(100):
        assert harness.client.validate_request(f"tx-{n}", csr_der).succeeded
    assert cloud.token_requests == {f"{cloud.url}.default": 1, f"{INTUNE_RESOURCE}.default": 1}
    assert len({c["headers"]["Authorization"] for c in cloud.calls}) == 1


def test_tokens_shared_between_threads(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    harness = make_client()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for n in range(10):
                harness.client.validate_request(f"tx-{n}", csr_der)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(cloud.calls) == 80
    assert sum(cloud.token_requests.values()) == 2
    assert len(cloud.discovery_requests) == 1


@pytest.mark.parametrize("encrypted", [False, True])
def test_certificate_auth_sends_ps256_assertion_with_x5c(
    pki: ThrowawayPKI, make_client: MakeClient, cloud: CloudDouble, csr_der: bytes, encrypted: bool
) -> None:
    cloud.mode = "certificate"
    key = pki.app_encrypted_key_path if encrypted else pki.app_key_path
    password = SecretSource(value=pki.app_key_password) if encrypted else SecretSource()
    harness = make_client(client_secret=SecretSource(), client_certificate=str(pki.app_cert_path),
                          client_key=str(key), client_key_password=password)
    assert harness.client.validate_request("tx-cert", csr_der).succeeded
    header = cloud.assertion_headers[0]
    assert header["alg"] == "PS256"
    assert header["x5c"] and header["x5t#S256"]


def test_wrong_secret_is_an_auth_error_naming_entra_id(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes
) -> None:
    harness = make_client(client_secret=SecretSource(value="not-the-secret"))
    with pytest.raises(IntuneAuthError) as caught:
        harness.client.validate_request("tx-bad", csr_der)
    message = str(caught.value)
    assert message.startswith("Entra ID refused the app credentials: invalid_client: AADSTS7000215: Invalid client")
    assert "Trace ID" not in message and "not-the-secret" not in message
    assert caught.value.activity_id and harness.sleeps == []
    assert not cloud.calls


def test_token_endpoint_unreachable_is_unavailable(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    gone = CloudDouble(cloud.pki).start()
    authority = gone.url
    gone.stop()
    harness = make_client(authority=authority)
    with pytest.raises(IntuneUnavailable) as caught:
        harness.client.validate_request("tx", csr_der)
    assert len(harness.sleeps) == 3 and caught.value.activity_id


def test_token_endpoint_5xx_is_unavailable(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    cloud.token_script.extend(Scripted(503, {"error": "temporarily_unavailable"}) for _ in range(4))
    harness = make_client(max_retries=1)
    with pytest.raises(IntuneUnavailable):
        harness.client.validate_request("tx", csr_der)


def test_intune_scope_with_double_slash_config_is_one_cache_entry(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes
) -> None:
    harness = make_client(intune_resource_url="https://api.manage.microsoft.com//")
    harness.client.validate_request("tx", csr_der)
    assert f"{INTUNE_RESOURCE}.default" in cloud.token_requests


# --- 401: one token refresh ------------------------------------------------------------------------------


def test_401_drops_the_token_and_retries_once(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    harness = make_client()
    harness.client.validate_request("tx-1", csr_der)
    cloud.revoke_tokens()
    assert harness.client.validate_request("tx-2", csr_der).succeeded
    assert cloud.token_requests[f"{INTUNE_RESOURCE}.default"] == 2
    retried = [c["headers"]["Client-Request-Id"] for c in cloud.calls[1:]]
    assert len(retried) == 2 and retried[0] == retried[1]
    assert harness.sleeps == []


def test_401_twice_is_an_auth_error(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    harness = make_client()
    cloud.script[VALIDATE].extend([Scripted(401, {"error": "x"}), Scripted(401, {"error": "x"})])
    with pytest.raises(IntuneAuthError, match="401") as caught:
        harness.client.validate_request("tx", csr_der)
    assert caught.value.status == 401 and len(cloud.calls) == 2


def test_403_is_an_auth_error_naming_the_permission(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes
) -> None:
    cloud.script[VALIDATE].append(Scripted(403, {"error": "Forbidden"}))
    harness = make_client()
    with pytest.raises(IntuneAuthError, match="scep_challenge_provider"):
        harness.client.validate_request("tx", csr_der)
    assert harness.sleeps == []


# --- discovery (§3) ---------------------------------------------------------------------------------------


def test_discovery_is_cached(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    harness = make_client()
    for n in range(100):
        harness.client.validate_request(f"tx-{n}", csr_der)
    harness.client.download_revocation_requests()
    assert len(cloud.discovery_requests) == 1
    request_id = cloud.discovery_requests[0]["Client-Request-Id"]
    assert uuid.UUID(request_id).version == 4
    assert cloud.discovery_requests[0]["Authorization"].startswith("Bearer ")


def test_discovery_refreshed_when_the_service_stops_accepting_connections(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes
) -> None:
    moved = CloudDouble(cloud.pki, issuer=cloud).start()
    try:
        cloud.use_intune_at(moved.url)
        harness = make_client()
        assert harness.client.validate_request("tx-1", csr_der).succeeded
        assert len(moved.calls) == 1
    finally:
        moved.stop()
    cloud.use_intune_at(cloud.url)
    assert harness.client.validate_request("tx-2", csr_der).succeeded
    assert len(cloud.discovery_requests) == 2
    assert len(cloud.calls) == 1
    assert len(harness.sleeps) == 1


def test_http_errors_do_not_clear_discovery(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    cloud.script[VALIDATE].append(Scripted(503, {"error": "busy"}))
    harness = make_client()
    harness.client.validate_request("tx", csr_der)
    assert len(cloud.discovery_requests) == 1


def test_service_missing_from_discovery_is_a_protocol_error(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes
) -> None:
    cloud.services = {"SomethingElse": f"{cloud.url}x"}
    with pytest.raises(IntuneProtocolError, match="ScepRequestValidationFEService"):
        make_client().client.validate_request("tx", csr_der)


# --- retries (§8) ----------------------------------------------------------------------------------------


def test_503_with_retry_after_seconds(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    cloud.script[VALIDATE].extend([Scripted(503, {"e": 1}, {"Retry-After": "2"}),
                                   Scripted(503, {"e": 1}, {"Retry-After": "1000"})])
    harness = make_client(backoff_max=8.0)
    assert harness.client.validate_request("tx", csr_der).succeeded
    assert harness.sleeps == [2.0, 32.0]  # the second capped at 4 x backoff_max
    ids = {c["headers"]["Client-Request-Id"] for c in cloud.calls}
    assert len(ids) == 1


def test_429_with_retry_after_http_date(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    cloud.script[VALIDATE].append(Scripted(429, {"e": 1}, {"Retry-After": when}))
    harness = make_client()
    assert harness.client.validate_request("tx", csr_der).succeeded
    assert len(harness.sleeps) == 1 and 3.0 <= harness.sleeps[0] <= 5.0


def test_exponential_backoff_with_jitter_then_unavailable(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes
) -> None:
    cloud.script[VALIDATE].extend(Scripted(500, {"e": n}) for n in range(4))
    harness = make_client(max_retries=3, backoff_base=0.5, backoff_max=0.8)
    with pytest.raises(IntuneUnavailable) as caught:
        harness.client.validate_request("tx", csr_der)
    assert harness.sleeps == [0.25, 0.4, 0.4]  # random()=0.5 x min(backoff_max, base x 2^n)
    assert caught.value.status == 500 and caught.value.retry_after is None
    assert caught.value.activity_id == cloud.calls[0]["headers"]["Client-Request-Id"]
    assert len(cloud.calls) == 4


def test_unavailable_carries_retry_after(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    cloud.script[VALIDATE].extend(Scripted(429, {}, {"Retry-After": "7"}) for _ in range(2))
    harness = make_client(max_retries=1)
    with pytest.raises(IntuneUnavailable) as caught:
        harness.client.validate_request("tx", csr_der)
    assert caught.value.retry_after == 7.0 and caught.value.status == 429


def test_read_timeout_is_retried(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    cloud.script[VALIDATE].append(Scripted(200, {"code": "Success"}, delay=2.0))
    harness = make_client(read_timeout=0.3)
    assert harness.client.validate_request("tx", csr_der).succeeded
    assert harness.sleeps == [0.25]
    assert len(cloud.discovery_requests) == 1  # a read timeout is not a failure to connect


def test_definite_failure_answer_is_not_retried(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    cloud.script[VALIDATE].append(Scripted(200, {"code": "ChallengeExpired", "errorDescription": "too old"}))
    harness = make_client()
    result = harness.client.validate_request("tx", csr_der)
    assert (result.succeeded, result.code, result.description) == (False, "ChallengeExpired", "too old")
    assert len(cloud.calls) == 1 and harness.sleeps == []


def test_400_is_not_retried(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    cloud.script[VALIDATE].append(Scripted(400, {"error": "bad request"}))
    harness = make_client()
    with pytest.raises(IntuneProtocolError) as caught:
        harness.client.validate_request("tx", csr_der)
    assert caught.value.status == 400 and len(cloud.calls) == 1 and harness.sleeps == []


def test_malformed_json_is_a_protocol_error(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    cloud.script[VALIDATE].append(Scripted(200, raw="{not json"))
    harness = make_client()
    with pytest.raises(IntuneProtocolError, match="malformed JSON"):
        harness.client.validate_request("tx", csr_der)
    assert harness.sleeps == []


def test_unexpected_shape_is_a_protocol_error(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    cloud.script[VALIDATE].append(Scripted(200, {"result": "ok"}))
    with pytest.raises(IntuneProtocolError, match="code"):
        make_client().client.validate_request("tx", csr_der)


# --- headers (§4) ----------------------------------------------------------------------------------------


def test_headers_on_every_call(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    harness = make_client()
    sent: list[requests.PreparedRequest] = []
    harness.transport.session.hooks["response"].append(lambda r, *a, **k: sent.append(r.request))
    harness.client.validate_request("tx", csr_der)
    harness.client.send_failure_notification(transaction_id="tx", csr_der=csr_der, hresult=1, description="d")
    harness.client.download_revocation_requests()
    ids = []
    for call, version in zip(cloud.calls, ["2018-02-20", "2018-02-20", "5019-05-05"], strict=True):
        headers = call["headers"]
        assert headers["Api-Version"] == version
        assert headers["Authorization"].removeprefix("Bearer ") in cloud.issued
        assert headers["Content-Type"] == "application/json"
        assert headers["Useragent"] == headers["User-Agent"] == "scep-server-tests/1.2.3"
        ids.append(uuid.UUID(headers["Client-Request-Id"]))
    assert len(set(ids)) == 3 and all(i.version == 4 for i in ids)
    intune = [r for r in sent if r.method == "POST" and "/oauth2/" not in (r.url or "")]
    assert all("UserAgent" in list(r.headers.keys()) for r in intune)  # the literal header name


# --- TLS and proxy (§2) ----------------------------------------------------------------------------------


def test_ca_bundle_pinned_despite_requests_ca_bundle(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cloud.pki.other_bundle))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(cloud.pki.other_bundle))
    assert make_client().client.validate_request("tx", csr_der).succeeded


def test_environment_bundle_is_not_trusted_either(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cloud.pki.ca_bundle))
    harness = make_client(ca_bundle=None)
    with pytest.raises(IntuneUnavailable, match="TLS"):
        harness.client.validate_request("tx", csr_der)
    assert harness.sleeps == []


def test_environment_proxy_is_ignored(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert make_client().client.validate_request("tx", csr_der).succeeded


def test_proxy_url_with_credentials(cloud: CloudDouble) -> None:
    config = config_for(cloud, proxy_host="proxy.corp.example", proxy_port=3128, proxy_user="svc@corp",
                        proxy_password=SecretSource(value="p@ss:w/rd"))
    expected = "http://svc%40corp:p%40ss%3Aw%2Frd@proxy.corp.example:3128"
    assert proxy_url(config) == expected
    session = build_session(config)
    try:
        assert session.proxies == {"http": expected, "https": expected}
        assert session.trust_env is False and session.verify == str(cloud.pki.ca_bundle)
    finally:
        session.close()


def test_proxy_url_variants(cloud: CloudDouble) -> None:
    assert proxy_url(config_for(cloud)) is None
    assert proxy_url(config_for(cloud, proxy_host="http://proxy", proxy_port=8080)) == "http://proxy:8080"
    assert proxy_url(config_for(cloud, proxy_host="proxy")) == "http://proxy"
    session = build_session(config_for(cloud, ca_bundle=None))
    try:
        # No ca_bundle: the operating system's store (requests' certifi bundle only when there is none).
        assert session.verify == (system_ca_bundle() or True) and session.proxies == {}
    finally:
        session.close()


# --- logging ---------------------------------------------------------------------------------------------


def test_logs_name_the_call_but_no_secret_token_or_challenge(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    harness = make_client(proxy_password=SecretSource(value="proxy-pw-xyz"))
    cloud.script[VALIDATE].append(Scripted(503, {"e": 1}))
    result = harness.client.validate_request("tx", csr_der)
    cloud.revoke_tokens()
    harness.client.validate_request("tx", csr_der)
    with pytest.raises(IntuneAuthError):
        make_client(client_secret=SecretSource(value="wrong-secret-abc")).client.validate_request("tx", csr_der)
    text = caplog.text
    lines = [r for r in caplog.records if r.name == "scep_server.intune" and r.levelno == logging.INFO]
    assert any(f"activity={result.activity_id}" in r.getMessage() and "attempt=2" in r.getMessage() for r in lines)
    assert any(r.levelno == logging.WARNING and "retrying validateRequest" in r.getMessage() for r in caplog.records)
    tokens = {c["headers"]["Authorization"].removeprefix("Bearer ") for c in cloud.calls}
    assert len(tokens) == 2
    for secret in [SECRET, "wrong-secret-abc", "proxy-pw-xyz", CHALLENGE, *tokens]:
        assert secret not in text
    assert base64.b64encode(csr_der).decode()[:40] not in text


def test_connect_timeout_forgets_discovery(
    make_client: MakeClient, cloud: CloudDouble, csr_der: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = make_client()
    harness.client.validate_request("tx-1", csr_der)
    session = harness.transport.session
    real = session.request
    failures = iter([requests.ConnectTimeout("connect timed out")])

    def flaky(method: str, url: str, *args: object, **kwargs: object) -> requests.Response:
        if "/scep/" in url:
            failure = next(failures, None)
            if failure is not None:
                raise failure
        return real(method, url, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(session, "request", flaky)
    assert harness.client.validate_request("tx-2", csr_der).succeeded
    assert len(cloud.discovery_requests) == 2 and harness.sleeps == [0.25]


def test_token_request_has_a_timeout(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    cloud.token_script.append(Scripted(200, {"access_token": "late", "expires_in": 3600}, delay=3.0))
    harness = make_client(read_timeout=0.3, max_retries=0)
    with pytest.raises(IntuneUnavailable, match="Entra ID"):
        harness.client.validate_request("tx", csr_der)


def _token_failures(reason: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    from scep_server import metrics

    body, _ = metrics.render()
    return sum(
        sample.value
        for family in text_string_to_metric_families(body.decode()) for sample in family.samples
        if sample.name == "scep_entra_token_failures_total" and sample.labels.get("reason") == reason
    )  # fmt: skip


def test_a_refused_token_request_is_counted(make_client: MakeClient, cloud: CloudDouble, csr_der: bytes) -> None:
    before = _token_failures("refused")
    harness = make_client(client_secret=SecretSource(value="not-the-secret"))
    with pytest.raises(IntuneAuthError):
        harness.client.validate_request("tx-counted", csr_der)
    assert _token_failures("refused") == before + 1
