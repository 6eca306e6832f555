"""The server with the `webhook` validator against a real local HTTPS webhook.

The webhook is http.server behind TLS in a thread, its certificate from a throw-away CA the profiles
trust through ``tls.ca_file``. It verifies every delivery with the receivers' helper
(``webhook_signature.verify``, replay cache included) before it answers as the test says: allow, deny,
sleep past the timeout, 500, garbage, a widened or a narrowed grant. Only an explicit allow issues.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import requests
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from scep_server.challenge import webhook_signature
from scep_server.challenge.webhook_schema import REQUEST_SCHEMA
from scep_server.errors import ConfigError, FailInfo
from scep_server.jobs.tasks import DeferredValidations
from scep_server.scep import client
from scep_server.scep.types import PKIStatus
from tests.support import pki

from .conftest import CHALLENGE, Device, ScepTestServer, make_config, serving

SECRET = "webhook-shared-secret-0123456789"
TIMEOUT = 1.0

CONFIG = """
data_dir: {data_dir}
ca:
  name: test-ca
  subject: "CN=Test Issuing CA,O=scep-server tests"
  key_size: 2048
profiles:
  hooked:
    challenge:
      type: webhook
      url: "{url}"
      secret: {{value: "{secret}"}}
      timeout: {timeout}
      tls: {{ca_file: "{ca_file}"}}
  hooked-pending:
    challenge:
      type: webhook
      url: "{url}"
      secret: {{value: "{secret}"}}
      timeout: {timeout}
      tls: {{ca_file: "{ca_file}"}}
      on_validator_unavailable: pending
  untrusting:
    challenge: {{type: webhook, url: "{url}", secret: {{value: "{secret}"}}, timeout: {timeout}}}
"""

Answer = tuple[int, bytes]  # status, body


def _json(document: object, status: int = 200) -> Answer:
    return status, json.dumps(document).encode()


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    document: dict[str, Any] | None
    refusal: webhook_signature.WebhookSignatureError | None


@dataclass
class Webhook:
    """The receiver: verifies each delivery, then answers with ``answer(document)`` after ``delay`` s."""

    url: str = ""
    answer: Callable[[dict[str, Any]], Answer] = lambda document: _json({"allow": True})
    delay: float = 0.0
    drip: float = 0.0  # seconds between the bytes of the answer's body (0: all at once)
    deliveries: list[Delivery] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)

    def seen(self, delivery_id: str) -> bool:
        before = delivery_id in self.seen_ids
        self.seen_ids.add(delivery_id)
        return before

    def receive(self, headers: dict[str, str], body: bytes) -> Answer:
        try:
            webhook_signature.verify(SECRET.encode(), headers, body, seen=self.seen)
        except webhook_signature.WebhookSignatureError as exc:
            self.deliveries.append(Delivery(headers, body, None, exc))
            return _json({"allow": False, "reason": f"refused delivery: {exc}"}, 401)
        document = json.loads(body)
        self.deliveries.append(Delivery(headers, body, document, None))
        if self.delay:
            self.release.wait(self.delay)
        return self.answer(document)

    @property
    def verified(self) -> list[dict[str, Any]]:
        """The documents of the deliveries that verified; every delivery of the server must."""
        assert [d.refusal for d in self.deliveries if d.refusal is not None] == []
        return [d.document for d in self.deliveries if d.document is not None]


def _handler(hook: Webhook) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, answer = hook.receive(dict(self.headers.items()), body)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if not hook.drip:
                    self.wfile.write(answer)
                for index in range(len(answer) if hook.drip else 0):
                    self.wfile.write(answer[index:index + 1])
                    self.wfile.flush()
                    if hook.release.wait(hook.drip):
                        return
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                pass  # the validator gave up waiting

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            pass

    return Handler


@dataclass(frozen=True)
class Tls:
    ca_file: Path
    cert_file: Path
    key_file: Path


def _tls(directory: Path) -> Tls:
    ca = pki.CA.root("CN=Webhook Test CA")
    leaf = ca.issue(
        "CN=127.0.0.1", key_type=pki.KeyType.P256, ekus=[ExtendedKeyUsageOID.SERVER_AUTH],
        sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    directory.mkdir(parents=True, exist_ok=True)
    tls = Tls(directory / "ca.pem", directory / "webhook.pem", directory / "webhook.key")
    tls.ca_file.write_bytes(ca.cert_pem())
    tls.cert_file.write_bytes(leaf.cert_pem())
    tls.key_file.write_bytes(leaf.key_pem())
    return tls


@pytest.fixture
def tls(tmp_path: Path) -> Tls:
    return _tls(tmp_path / "webhook-tls")


@pytest.fixture
def hook(tls: Tls) -> Iterator[Webhook]:
    receiver = Webhook()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    httpd.daemon_threads = True
    httpd.block_on_close = False
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    receiver.url = f"https://127.0.0.1:{httpd.server_address[1]}/scep-hook"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def server(tmp_path: Path, hook: Webhook, tls: Tls) -> Iterator[ScepTestServer]:
    config = make_config(tmp_path, CONFIG, url=hook.url, secret=SECRET, timeout=TIMEOUT, ca_file=tls.ca_file)
    with serving(config) as started:
        yield started


def _send(server: ScepTestServer, device: Device, *, profile: str = "hooked",
          csr: x509.CertificateSigningRequest | None = None) -> tuple[client.CertRep, client.BuiltRequest]:
    built = server.pkcsreq(device, csr=csr)
    return server.send(built, device, profile=profile), built


def _audited(server: ScepTestServer, transaction_id: str) -> list[str]:
    return [f"{op.outcome} {op.detail}" for op in server.runtime.store.list_operations(transaction_id=transaction_id)]


# --- allow ---------------------------------------------------------------------------------------


def test_an_allow_issues_and_the_webhook_sees_a_signed_description(server: ScepTestServer, hook: Webhook) -> None:
    device = Device(common_name="allowed-device")
    reply, built = _send(server, device)
    assert reply.status is PKIStatus.SUCCESS
    certificate = reply.certificate_for(device.key.public_key())
    certificate.verify_directly_issued_by(server.ca.ca_cert)
    [document] = hook.verified
    jsonschema.validate(document, REQUEST_SCHEMA)
    assert document["version"] == 1
    assert document["profile"] == "hooked"
    assert document["transaction_id"] == built.transaction_id
    assert document["message_type"] == "PKCSReq"
    assert document["subject"] == "CN=allowed-device"
    assert document["challenge"] == CHALLENGE
    assert document["key"] == {"type": "rsa", "size": 2048}
    assert document["sans"] == [] and document["requested_extensions"] == []
    assert document["requester_ip"] == "127.0.0.1"
    sent_at = datetime.fromisoformat(document["sent_at"])
    assert abs(datetime.now(UTC) - sent_at) < timedelta(minutes=1)
    assert server.issued_count() == 1


def test_the_webhook_is_asked_once_per_request(server: ScepTestServer, hook: Webhook) -> None:
    device = Device(common_name="asked-once")
    hook.answer = lambda document: _json({"allow": False, "reason": "no"})
    reply, _ = _send(server, device)
    assert reply.status is PKIStatus.FAILURE
    assert len(hook.verified) == 1


def test_the_webhook_decides_renewals_and_is_told_so(server: ScepTestServer, hook: Webhook) -> None:
    device = Device(common_name="renewing-device")
    current = server.enroll(device, profile="hooked")
    renewed_key = pki.new_key()
    csr = pki.csr(renewed_key, "CN=renewing-device", challenge=None)
    built = client.build_pkcsreq(csr, signer_cert=current, signer_key=device.key, recipient=server.ca.ra_cert,
                                 renewal=True, transaction_id="renewal-1")
    hook.answer = lambda document: _json({"allow": document["message_type"] == "RenewalReq"})
    reply = server.send(built, device, signer=current, profile="hooked")
    assert reply.status is PKIStatus.SUCCESS
    reply.certificate_for(renewed_key.public_key())
    renewal = hook.verified[-1]
    assert renewal["message_type"] == "RenewalReq" and renewal["challenge"] is None
    jsonschema.validate(renewal, REQUEST_SCHEMA)


# --- deny ----------------------------------------------------------------------------------------


def test_a_deny_issues_nothing_and_its_reason_is_logged_and_audited(
    server: ScepTestServer, hook: Webhook, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    hook.answer = lambda document: _json({"allow": False, "reason": "device is not in the inventory"})
    reply, built = _send(server, Device(common_name="denied-device"))
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST
    assert reply.fail_info_text == "challenge not accepted"  # the reason stays with the operator
    assert "device is not in the inventory" in caplog.text
    [audited] = _audited(server, built.transaction_id)
    assert audited == "FAILURE:BAD_REQUEST the webhook denied the request: device is not in the inventory"
    assert server.issued_count() == 0


def test_a_deny_with_a_4xx_status_is_a_deny(server: ScepTestServer, hook: Webhook) -> None:
    hook.answer = lambda document: _json({"allow": False, "reason": "forbidden here"}, 403)
    reply, built = _send(server, Device(common_name="denied-403"))
    assert reply.status is PKIStatus.FAILURE
    assert "the webhook denied the request: forbidden here" in _audited(server, built.transaction_id)[0]


def test_a_deny_reason_is_made_printable_and_short(server: ScepTestServer, hook: Webhook) -> None:
    hook.answer = lambda document: _json({"allow": False, "reason": "line one\nforged: entry " + "x" * 500})
    reply, built = _send(server, Device(common_name="denied-long"))
    assert reply.status is PKIStatus.FAILURE
    [audited] = _audited(server, built.transaction_id)
    assert "\n" not in audited and "line one\\0Aforged" in audited
    assert audited.endswith("...") and len(audited) < 300


# --- undecided: timeouts and 5xx -----------------------------------------------------------------


def test_a_webhook_that_does_not_answer_in_time_fails_closed(server: ScepTestServer, hook: Webhook) -> None:
    hook.delay = TIMEOUT * 2
    reply, built = _send(server, Device(common_name="slow-webhook"))
    assert reply.status is PKIStatus.FAILURE
    assert reply.fail_info_text == "temporarily unable to issue; retry later"
    assert "did not answer within 1 s" in _audited(server, built.transaction_id)[0]
    assert server.issued_count() == 0


def test_a_webhook_dripping_its_answer_is_given_up_on_at_the_timeout(server: ScepTestServer, hook: Webhook) -> None:
    hook.answer = lambda document: _json({"allow": True, "reason": "x" * 40})
    hook.drip = TIMEOUT / 4  # each byte in time for a read, the whole answer far from it
    started = time.monotonic()
    reply, built = _send(server, Device(common_name="dripping-webhook"))
    assert reply.status is PKIStatus.FAILURE and server.issued_count() == 0
    assert time.monotonic() - started < TIMEOUT * 4  # not the ~15 s the whole answer would take
    assert "did not answer within 1 s" in _audited(server, built.transaction_id)[0]


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_5xx_fails_closed(server: ScepTestServer, hook: Webhook, status: int) -> None:
    hook.answer = lambda document: _json({"allow": True}, status)  # an allow in an error answer is none
    reply, built = _send(server, Device(common_name=f"status-{status}"))
    assert reply.status is PKIStatus.FAILURE
    assert f"answered HTTP {status}" in _audited(server, built.transaction_id)[0]
    assert server.issued_count() == 0


def test_with_the_pending_policy_an_undecided_request_waits_for_the_webhook(
    server: ScepTestServer, hook: Webhook
) -> None:
    device = Device(common_name="pending-device")
    hook.delay = TIMEOUT * 2
    reply, built = _send(server, device, profile="hooked-pending")
    assert reply.status is PKIStatus.PENDING
    poll = client.build_cert_poll(server.ca.ca_cert.subject, device.subject, transaction_id=built.transaction_id,
                                  signer_cert=device.signer, signer_key=device.key, recipient=server.ca.ra_cert)
    hook.answer = lambda document: _json({"error": "overloaded"}, 503)
    hook.delay = 0
    _run_deferred(server)
    assert server.send(poll, device, profile="hooked-pending").status is PKIStatus.PENDING
    hook.answer = lambda document: _json({"allow": True})
    _run_deferred(server)
    reply = server.send(poll, device, profile="hooked-pending")
    assert reply.status is PKIStatus.SUCCESS
    reply.certificate_for(device.key.public_key()).verify_directly_issued_by(server.ca.ca_cert)
    assert [d["transaction_id"] for d in hook.verified] == [built.transaction_id] * 3


def _run_deferred(server: ScepTestServer) -> None:
    """The background retry of deferred validations, as if the backoff had elapsed."""
    runtime = server.runtime
    later = datetime.now(UTC) + timedelta(minutes=10)  # past the backoff, within pending_timeout_minutes
    assert DeferredValidations(runtime.store, runtime.service.issuance, runtime.profiles).run_once(now=later) == 1


def test_an_untrusted_webhook_certificate_fails_closed(server: ScepTestServer, hook: Webhook) -> None:
    reply, built = _send(server, Device(common_name="untrusted-tls"), profile="untrusting")
    assert reply.status is PKIStatus.FAILURE
    assert "TLS with the webhook" in _audited(server, built.transaction_id)[0]
    assert hook.deliveries == [] and server.issued_count() == 0


# --- garbage -------------------------------------------------------------------------------------


GARBAGE: dict[str, Answer] = {
    "not JSON": (200, b"<html>OK</html>"),
    "allow as a string": _json({"allow": "yes"}),
    "allow as a number": _json({"allow": 1}),
    "no allow": _json({"reason": "fine"}),
    "not an object": _json([{"allow": True}]),
    "an unknown key": _json({"allow": True, "issue": "everything"}),
    "allow twice": (200, b'{"allow": false, "allow": true}'),
    "NaN validity": (200, b'{"allow": true, "validity_days": NaN}'),
    "fractional validity": _json({"allow": True, "validity_days": 1.5}),
    "malformed sans": _json({"allow": True, "sans": ["dns:device.example"]}),
    "empty body": (200, b""),
    "not UTF-8": (200, b'{"allow": true, "reason": "\xff"}'),
    "over 64 KiB": _json({"allow": True, "reason": "x" * 70_000}),
    "allow with a 4xx": _json({"allow": True}, 404),
    "a 4xx without JSON": (403, b"Forbidden"),
    "a redirect": _json({"allow": True}, 302),
}


@pytest.mark.parametrize("garbage", GARBAGE, ids=list(GARBAGE))
def test_an_answer_that_is_no_answer_fails_closed(
    server: ScepTestServer, hook: Webhook, caplog: pytest.LogCaptureFixture, garbage: str
) -> None:
    caplog.set_level(logging.ERROR, logger="scep_server.challenge.webhook")
    status, body = GARBAGE[garbage]
    hook.answer = lambda document: (status, body)
    reply, built = _send(server, Device(common_name="garbage"))
    assert reply.status is PKIStatus.FAILURE and reply.fail_info is FailInfo.BAD_REQUEST
    assert _audited(server, built.transaction_id)[0].startswith("FAILURE:BAD_REQUEST the webhook")
    assert f"transaction={built.transaction_id} reason=WebhookInvalidAnswer" in caplog.text
    assert server.issued_count() == 0


# --- narrowing -----------------------------------------------------------------------------------


def _csr_with_sans(device: Device, *names: str) -> x509.CertificateSigningRequest:
    return pki.csr(device.key, device.subject, sans=[x509.DNSName(name) for name in names], challenge=CHALLENGE)


def _sans(certificate: x509.Certificate) -> list[str]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return extension.value.get_values_for_type(x509.DNSName)


def test_an_allow_may_narrow_the_names_and_the_validity(server: ScepTestServer, hook: Webhook) -> None:
    device = Device(common_name="narrowed-device")
    csr = _csr_with_sans(device, "a.corp.example", "b.corp.example", "c.corp.example")
    hook.answer = lambda document: _json({"allow": True, "reason": "only b", "validity_days": 7,
                                          "sans": [{"type": "dns", "value": "B.corp.example"}]})
    reply, _ = _send(server, device, csr=csr)
    assert reply.status is PKIStatus.SUCCESS
    certificate = reply.certificate_for(device.key.public_key())
    assert _sans(certificate) == ["b.corp.example"]
    lifetime = certificate.not_valid_after_utc - datetime.now(UTC)
    assert timedelta(days=6, hours=23) < lifetime <= timedelta(days=7)
    [document] = hook.verified
    assert document["sans"] == [{"type": "dns", "value": name} for name in ("a.corp.example", "b.corp.example",
                                                                             "c.corp.example")]
    assert document["requested_extensions"] == [
        {"oid": "2.5.29.17", "critical": False, "name": "subject_alternative_name"}
    ]


def test_an_allow_without_narrowing_grants_what_was_asked(server: ScepTestServer, hook: Webhook) -> None:
    device = Device(common_name="full-device")
    reply, _ = _send(server, device, csr=_csr_with_sans(device, "a.corp.example", "b.corp.example"))
    certificate = reply.certificate_for(device.key.public_key())
    assert _sans(certificate) == ["a.corp.example", "b.corp.example"]
    assert certificate.not_valid_after_utc - datetime.now(UTC) > timedelta(days=364)


def test_an_allow_that_widens_the_names_fails_closed(server: ScepTestServer, hook: Webhook) -> None:
    device = Device(common_name="widened-device")
    hook.answer = lambda document: _json({"allow": True, "sans": [{"type": "dns", "value": "a.corp.example"},
                                                                  {"type": "dns", "value": "admin.corp.example"}]})
    reply, built = _send(server, device, csr=_csr_with_sans(device, "a.corp.example"))
    assert reply.status is PKIStatus.FAILURE
    assert "admin.corp.example, which the request does not ask for" in _audited(server, built.transaction_id)[0]
    assert server.issued_count() == 0


def test_an_allow_that_lengthens_the_validity_fails_closed(server: ScepTestServer, hook: Webhook) -> None:
    hook.answer = lambda document: _json({"allow": True, "validity_days": 3650})
    reply, built = _send(server, Device(common_name="long-lived"))
    assert reply.status is PKIStatus.FAILURE
    assert "granted a validity of 3650 days" in _audited(server, built.transaction_id)[0]
    assert server.issued_count() == 0


# --- what the receiver can tell ------------------------------------------------------------------


def test_a_replayed_or_unsigned_delivery_is_detected_by_the_receiver(
    server: ScepTestServer, hook: Webhook, tls: Tls
) -> None:
    assert _send(server, Device(common_name="captured"))[0].status is PKIStatus.SUCCESS
    [captured] = hook.deliveries
    replayed = requests.post(hook.url, data=captured.body, headers=captured.headers, verify=str(tls.ca_file),
                             timeout=5)
    unsigned = requests.post(hook.url, data=captured.body, headers={"Content-Type": "application/json"},
                             verify=str(tls.ca_file), timeout=5)
    tampered = requests.post(hook.url, data=captured.body.replace(b"captured", b"attacker"),
                             headers=captured.headers, verify=str(tls.ca_file), timeout=5)
    assert (replayed.status_code, unsigned.status_code, tampered.status_code) == (401, 401, 401)
    refusals = [type(delivery.refusal) for delivery in hook.deliveries[1:]]
    assert refusals == [webhook_signature.ReplayedWebhookDelivery, webhook_signature.MissingWebhookHeader,
                        webhook_signature.WebhookSignatureMismatch]


# --- configuration -------------------------------------------------------------------------------


PLAIN_HTTP = """
data_dir: {data_dir}
profiles:
  local:
    challenge: {{type: webhook, url: "http://127.0.0.1:8081/hook", secret: {{value: "{secret}"}}{extra}}}
"""


def test_a_plain_http_url_needs_allow_insecure_http(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"profiles\.local\.challenge\.url: .* is plain http.*allow_insecure_http"):
        make_config(tmp_path, PLAIN_HTTP, secret=SECRET, extra="")
    config = make_config(tmp_path, PLAIN_HTTP, secret=SECRET, extra=", allow_insecure_http: true")
    assert config.profiles[0].challenge.type == "webhook"


def test_a_short_secret_is_refused_when_the_profile_is_built(tmp_path: Path, hook: Webhook, tls: Tls) -> None:
    config = make_config(tmp_path, CONFIG, url=hook.url, secret="short", timeout=TIMEOUT, ca_file=tls.ca_file)
    with pytest.raises(ConfigError, match="profile 'hooked': the webhook secret must be at least 16 bytes"):
        with serving(config):
            pass
