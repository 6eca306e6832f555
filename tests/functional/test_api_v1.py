"""The admin API v1 against a real server: every endpoint answers as its OpenAPI document says, for real
enrollments, revocations and outbox entries; paging, CSV, PEM and DER; JSON errors; tokens and scopes."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.test import TestResponse

from scep_server.cli import main
from scep_server.config import SecretSource
from scep_server.service.intune_outbox import FAILURE_NOTIFICATION
from scep_server.service.reports import CERTIFICATE_COLUMNS
from scep_server.web import api_v1, openapi
from scep_server.web.errors import ERROR_CODES

from .conftest import CHALLENGE, Device, ScepTestServer, make_config, serving

TOKEN = "api-v1-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DOCUMENT = openapi.document()
_REGISTRY = Registry().with_resource("urn:scep-server:api", Resource.from_contents(DOCUMENT, DRAFT202012))


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def response_validator(path: str, method: str, status: int, media: str = "application/json") -> Draft202012Validator:
    """The documented schema of one answer (``path`` as the document writes it, under ``/api/v1``)."""
    assert media in DOCUMENT["paths"][path][method]["responses"][str(status)]["content"], (path, status, media)
    pointer = _pointer("paths", path, method, "responses", str(status), "content", media, "schema")
    return Draft202012Validator({"$ref": f"urn:scep-server:api#/{pointer}"}, registry=_REGISTRY,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def documented(response: TestResponse, path: str, method: str = "get") -> Any:
    """The JSON body of ``response``, after checking it against the document's schema for its status."""
    assert response.mimetype == "application/json", response.get_data(as_text=True)
    body = response.get_json()
    response_validator(path, method, response.status_code).validate(body)
    return body


def error_code(response: TestResponse, path: str, method: str = "get") -> str:
    """The code of a documented error answer, which must be one the API lists."""
    code: str = documented(response, path, method)["error"]["code"]
    assert code in ERROR_CODES, code
    return code


@dataclass
class Population:
    """A server with a few real enrollments: four in ``default`` (one with SANs, one revoked), one in
    ``strict``, one refused challenge, and a dead and a pending Intune notification."""

    server: ScepTestServer
    certificates: dict[str, x509.Certificate]  # by common name
    device_id: str
    refused_transaction: str
    dead_outbox: int
    pending_outbox: int
    tmp_path: Path

    def get(self, url: str, **kwargs: Any) -> TestResponse:
        return self.server.http.get(url, headers=kwargs.pop("headers", AUTH), **kwargs)

    def post(self, url: str, **kwargs: Any) -> TestResponse:
        return self.server.http.post(url, headers=kwargs.pop("headers", AUTH), **kwargs)

    def serial(self, name: str) -> str:
        return f"{self.certificates[name].serial_number:x}"

    def token(self, name: str, *scopes: str, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
        capsys.readouterr()
        args = ["--config", str(self.tmp_path / "scep-server.yaml"), "tokens", "create", name]
        assert main([*args, *[f"--scope={scope}" for scope in scopes]]) == 0
        return {"Authorization": f"Bearer {capsys.readouterr().out.splitlines()[-1]}"}


def _csr_with_sans(device: Device, device_id: str) -> x509.CertificateSigningRequest:
    sans = x509.SubjectAlternativeName([
        x509.DNSName("laptop-7.corp.example"), x509.UniformResourceIdentifier(f"IntuneDeviceId://{device_id}"),
    ])
    return (
        x509.CertificateSigningRequestBuilder().subject_name(device.subject).add_extension(sans, critical=False)
        .add_attribute(x509.oid.AttributeOID.CHALLENGE_PASSWORD, CHALLENGE.encode()).sign(device.key, hashes.SHA256())
    )


def _populate(server: ScepTestServer, tmp_path: Path) -> Population:
    certificates = {}
    for name in ("alpha", "bravo", "charlie"):
        certificates[name] = server.enroll(Device(common_name=name))
    device_id = str(uuid.uuid4())
    laptop = Device(common_name="laptop-7")
    certificates["laptop-7"] = server.enroll(laptop, csr=_csr_with_sans(laptop, device_id))
    certificates["strict-1"] = server.enroll(Device(common_name="strict-1"), profile="strict")
    refused = Device(common_name="refused")
    built = server.pkcsreq(refused, challenge="not-the-challenge")
    assert server.send(built, refused).status.name == "FAILURE"
    revoked = server.http.post(f"/api/v1/certificates/{certificates['bravo'].serial_number:x}/revoke",
                               json={"reason": "superseded", "comment": "replaced by a new laptop"}, headers=AUTH)
    assert revoked.status_code == 200
    store = server.runtime.store
    payload = {"transactionId": built.transaction_id, "hResult": -2146885628, "errorDescription": "refused"}
    dead = store.outbox_add(kind=FAILURE_NOTIFICATION, transaction_id=built.transaction_id, payload=payload)
    store.outbox_dead(dead, at=datetime.now(UTC), error="Intune answered 400")
    pending = store.outbox_add(kind=FAILURE_NOTIFICATION, transaction_id=built.transaction_id, payload=payload)
    return Population(server, certificates, device_id, built.transaction_id, dead, pending, tmp_path)


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Population]:
    """Shared by the read-only tests."""
    tmp_path = tmp_path_factory.mktemp("api-v1")
    with serving(replace(make_config(tmp_path), admin_token=SecretSource(value=TOKEN))) as server:
        yield _populate(server, tmp_path)


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Population]:
    """For the tests that change something."""
    with serving(replace(make_config(tmp_path), admin_token=SecretSource(value=TOKEN))) as server:
        yield _populate(server, tmp_path)


# --- certificates ----------------------------------------------------------------------------------------


def test_certificates_list_newest_first_as_documented(populated: Population) -> None:
    body = documented(populated.get("/api/v1/certificates"), "/certificates")
    names = [item["subject"] for item in body["items"]]
    assert names == ["CN=strict-1", "CN=laptop-7", "CN=charlie", "CN=bravo", "CN=alpha"]
    assert body["next_cursor"] is None
    bravo = body["items"][3]
    assert (bravo["status"], bravo["revocation_reason"], bravo["expired"]) == ("revoked", "superseded", False)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"subject": "ALPH"}, ["alpha"]),
        ({"san": "LAPTOP-7.corp"}, ["laptop-7"]),
        ({"profile": "strict"}, ["strict-1"]),
        ({"status": "revoked"}, ["bravo"]),
        ({"status": "valid", "profile": "default"}, ["laptop-7", "charlie", "alpha"]),
        ({"status": "expired"}, []),
        ({"issued_since": "1h"}, ["strict-1", "laptop-7", "charlie", "bravo", "alpha"]),
        ({"issued_until": "1h"}, []),
        ({"expires_before": "2000-01-01T00:00:00Z"}, []),
        ({"expires_before": "1000w", "subject": "charlie"}, []),
    ],
)
def test_certificates_filters(populated: Population, query: dict[str, str], expected: list[str]) -> None:
    body = documented(populated.get("/api/v1/certificates", query_string=query), "/certificates")
    assert [item["subject"].removeprefix("CN=") for item in body["items"]] == expected


def test_certificates_by_serial_thumbprint_and_device_id(populated: Population) -> None:
    laptop = populated.certificates["laptop-7"]
    sha1 = laptop.fingerprint(hashes.SHA1()).hex()  # the thumbprint Windows shows
    by_serial = populated.get("/api/v1/certificates", query_string={"serial": f"0x{laptop.serial_number:X}"})
    by_sha1 = populated.get("/api/v1/certificates", query_string={"thumbprint": ":".join(
        sha1[i:i + 2] for i in range(0, len(sha1), 2)).upper()})
    by_sha256 = populated.get("/api/v1/certificates",
                              query_string={"thumbprint": laptop.fingerprint(hashes.SHA256()).hex()})
    by_device = populated.get("/api/v1/certificates", query_string={"device_id": populated.device_id.upper()})
    for response in (by_serial, by_sha1, by_sha256, by_device):
        assert [item["serial"] for item in documented(response, "/certificates")["items"]] == [
            populated.serial("laptop-7")
        ]


def test_paging_walks_every_certificate_once(populated: Population) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        body = documented(populated.get("/api/v1/certificates", query_string=query), "/certificates")
        assert len(body["items"]) <= 2
        seen += [item["serial"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == len(set(seen)) == 5
    assert set(seen) == {populated.serial(name) for name in populated.certificates}


def test_paging_keeps_the_filters(populated: Population) -> None:
    first = documented(populated.get("/api/v1/certificates", query_string={"profile": "default", "limit": 3}),
                       "/certificates")
    second = documented(populated.get("/api/v1/certificates", query_string={
        "profile": "default", "limit": 3, "cursor": first["next_cursor"]}), "/certificates")
    subjects = [item["subject"] for item in first["items"] + second["items"]]
    assert subjects == ["CN=laptop-7", "CN=charlie", "CN=bravo", "CN=alpha"] and second["next_cursor"] is None


def test_csv_export_parses(populated: Population) -> None:
    response = populated.get("/api/v1/certificates", query_string={"format": "csv", "limit": 4})
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "text/csv" in DOCUMENT["paths"]["/certificates"]["get"]["responses"]["200"]["content"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert tuple(rows[0]) == CERTIFICATE_COLUMNS
    assert [row["subject"] for row in rows] == ["CN=strict-1", "CN=laptop-7", "CN=charlie", "CN=bravo"]
    assert rows[1]["sans"] == f"dns:laptop-7.corp.example; uri:IntuneDeviceId://{populated.device_id}"
    assert rows[3]["revocation_reason"] == "superseded"
    rest = populated.get("/api/v1/certificates", query_string={"format": "csv",
                                                               "cursor": response.headers["X-Next-Cursor"]})
    assert [row["subject"] for row in csv.DictReader(io.StringIO(rest.get_data(as_text=True)))] == ["CN=alpha"]
    assert "X-Next-Cursor" not in rest.headers


def test_show_certificate_as_json_pem_and_der(populated: Population) -> None:
    issued = populated.certificates["charlie"]
    path = f"/api/v1/certificates/{populated.serial('charlie')}"
    shown = documented(populated.get(path), "/certificates/{serial}")
    assert shown["subject"] == "CN=charlie" and x509.load_pem_x509_certificate(shown["pem"].encode()) == issued
    as_pem = populated.get(path, query_string={"format": "pem"})
    assert as_pem.mimetype == "application/x-pem-file" and x509.load_pem_x509_certificate(as_pem.data) == issued
    as_der = populated.get(path, query_string={"format": "der"})
    assert as_der.mimetype == "application/pkix-cert" and x509.load_der_x509_certificate(as_der.data) == issued
    content = DOCUMENT["paths"]["/certificates/{serial}"]["get"]["responses"]["200"]["content"]
    assert {"application/json", "application/x-pem-file", "application/pkix-cert"} == set(content)


@pytest.mark.parametrize(("serial", "status", "code"), [
    ("abcdef", 404, "not_found"), ("zz", 400, "invalid_parameter"), ("0", 400, "invalid_parameter"),
    ("::", 400, "invalid_parameter"), ("ff" * 21, 400, "invalid_parameter"),
])
def test_show_unknown_or_malformed_serial(populated: Population, serial: str, status: int, code: str) -> None:
    response = populated.get(f"/api/v1/certificates/{serial}")
    assert response.status_code == status and error_code(response, "/certificates/{serial}") == code
    assert status == 404 or response.get_json()["error"]["message"].startswith("serial ")


# --- revocation ------------------------------------------------------------------------------------------


def test_revoke_audited_as_the_token_with_its_comment(fresh: Population, capsys: pytest.CaptureFixture[str]) -> None:
    path = f"/api/v1/certificates/{fresh.serial('alpha')}/revoke"
    revoker = fresh.token("ops", "revoke", capsys=capsys)
    response = fresh.post(path, json={"reason": "keyCompromise", "comment": "stolen"}, headers=revoker)
    row = documented(response, "/certificates/{serial}/revoke", "post")
    assert (row["status"], row["revocation_reason"]) == ("revoked", "keyCompromise")
    again = fresh.post(path, json={}, headers=revoker)
    assert again.status_code == 409 and error_code(again, "/certificates/{serial}/revoke", "post") == "conflict"
    revocations = documented(fresh.get("/api/v1/revocations"), "/revocations")["items"]
    assert [(r["serial"], r["actor"], r["source"], r["reason"], r["comment"]) for r in revocations] == [
        (fresh.serial("alpha"), "token:ops", "api", "keyCompromise", "stolen"),
        (fresh.serial("bravo"), "admin-token", "api", "superseded", "replaced by a new laptop"),
    ]


def test_revoke_without_a_body_is_unspecified(fresh: Population) -> None:
    response = fresh.post(f"/api/v1/certificates/{fresh.serial('charlie')}/revoke")
    assert documented(response, "/certificates/{serial}/revoke", "post")["revocation_reason"] == "unspecified"


@pytest.mark.parametrize("body", [
    {"reason": "removeFromCRL"}, {"reason": "KEYCOMPROMISE"}, {"reason": 1}, {"reason": None}, ["keyCompromise"],
    {"reason": "keyCompromise", "why": "x"}, {"comment": "x" * (openapi.MAX_COMMENT + 1)}, {"comment": 5},
    {"comment": "two\nlines"}, {"comment": "\u202eevil"}, {"comment": "\x1b[31m"},
])
def test_revoke_refuses_a_body_outside_its_schema(fresh: Population, body: Any) -> None:
    path = f"/api/v1/certificates/{fresh.serial('charlie')}/revoke"
    response = fresh.post(path, json=body)
    assert response.status_code == 400
    assert error_code(response, "/certificates/{serial}/revoke", "post") == "invalid_body"
    schema = Draft202012Validator(DOCUMENT["components"]["schemas"]["RevokeRequest"])
    assert not schema.is_valid(body)  # the document refuses it too
    assert fresh.get(f"/api/v1/certificates/{fresh.serial('charlie')}").get_json()["status"] == "valid"


def test_revoke_refuses_a_comment_that_is_no_text(fresh: Population) -> None:
    """JSON can escape a lone surrogate, which no UTF-8 audit row can hold."""
    response = fresh.post(f"/api/v1/certificates/{fresh.serial('charlie')}/revoke", data='{"comment": "\\ud800"}',
                          content_type="application/json")
    assert response.status_code == 400
    assert error_code(response, "/certificates/{serial}/revoke", "post") == "invalid_body"


def test_revoke_refuses_null_for_a_body(fresh: Population) -> None:
    """An absent body is a revocation as unspecified; ``null`` is no RevokeRequest object."""
    response = fresh.post(f"/api/v1/certificates/{fresh.serial('charlie')}/revoke", data="null",
                          content_type="application/json")
    assert response.status_code == 400
    assert error_code(response, "/certificates/{serial}/revoke", "post") == "invalid_body"


def test_revoke_a_body_that_is_not_json(fresh: Population) -> None:
    response = fresh.post(f"/api/v1/certificates/{fresh.serial('charlie')}/revoke", data='{"reason": "keyComp',
                          content_type="application/json")
    assert error_code(response, "/certificates/{serial}/revoke", "post") == "invalid_body"


def test_revoke_unknown_serial_is_404(fresh: Population) -> None:
    response = fresh.post("/api/v1/certificates/abcdef/revoke", json={})
    assert response.status_code == 404 and error_code(response, "/certificates/{serial}/revoke", "post") == "not_found"


# --- enrollments, revocations, audit -----------------------------------------------------------------------


def test_enrollments_list_and_filters(populated: Population) -> None:
    everything = documented(populated.get("/api/v1/enrollments"), "/enrollments")["items"]
    assert len(everything) == 6 and everything[0]["transaction_id"] == populated.refused_transaction
    failed = documented(populated.get("/api/v1/enrollments", query_string={"outcome": "failed"}), "/enrollments")
    assert [(e["transaction_id"], e["fail_info"]) for e in failed["items"]] == [
        (populated.refused_transaction, "badRequest")
    ]
    by_fail_info = populated.get("/api/v1/enrollments", query_string={"fail_info": "badRequest", "since": "1d"})
    assert documented(by_fail_info, "/enrollments")["items"] == failed["items"]
    strict = documented(populated.get("/api/v1/enrollments", query_string={"profile": "strict"}), "/enrollments")
    assert [e["serial"] for e in strict["items"]] == [populated.serial("strict-1")]
    by_ip = populated.get("/api/v1/enrollments", query_string={"requester_ip": "192.0.2.1"})
    assert documented(by_ip, "/enrollments")["items"] == []


def test_enrollments_paging(populated: Population) -> None:
    seen: list[tuple[str, str]] = []
    cursor: str | None = None
    while True:
        query = {"limit": "4"} | ({"cursor": cursor} if cursor else {})
        body = documented(populated.get("/api/v1/enrollments", query_string=query), "/enrollments")
        seen += [(e["profile"], e["transaction_id"]) for e in body["items"]]
        if (cursor := body["next_cursor"]) is None:
            break
    assert len(seen) == len(set(seen)) == 6


def test_enrollment_story(populated: Population) -> None:
    issued = documented(populated.get("/api/v1/certificates", query_string={"subject": "bravo"}), "/certificates")
    transaction_id = issued["items"][0]["transaction_id"]
    story = documented(populated.get(f"/api/v1/enrollments/{transaction_id}", query_string={"profile": "default"}),
                       "/enrollments/{transaction_id}")
    assert story["transaction"]["state"] == "issued"
    assert story["certificate"]["serial"] == populated.serial("bravo")
    assert {"received", "issued", "revoked"} <= {step["step"] for step in story["steps"]}
    refused = documented(populated.get(f"/api/v1/enrollments/{populated.refused_transaction}"),
                         "/enrollments/{transaction_id}")
    assert refused["certificate"] is None
    assert {n["id"]: n["state"] for n in refused["notifications"]} == {
        populated.dead_outbox: "dead", populated.pending_outbox: "pending"
    }


@pytest.mark.parametrize("url", ["/api/v1/enrollments/no-such-transaction",
                                 "/api/v1/enrollments/{tid}?profile=strict"])
def test_enrollment_story_404(populated: Population, url: str) -> None:
    response = populated.get(url.format(tid=populated.refused_transaction))
    assert response.status_code == 404 and error_code(response, "/enrollments/{transaction_id}") == "not_found"


def test_revocations_filters(populated: Population) -> None:
    for query, expected in [({}, 1), ({"actor": "admin-token", "source": "api"}, 1), ({"actor": "token:x"}, 0),
                            ({"since": "1h", "until": "2999-01-01T00:00:00+00:00"}, 1), ({"until": "1h"}, 0)]:
        body = documented(populated.get("/api/v1/revocations", query_string=query), "/revocations")
        assert len(body["items"]) == expected, query


def test_audit_log_pages_and_filters(populated: Population) -> None:
    seen: list[int] = []
    cursor: str | None = None
    while True:
        query = {"limit": "2"} | ({"cursor": cursor} if cursor else {})
        body = documented(populated.get("/api/v1/audit", query_string=query), "/audit")
        seen += [entry["id"] for entry in body["items"]]
        if (cursor := body["next_cursor"]) is None:
            break
    assert seen == sorted(set(seen), reverse=True) and len(seen) >= 6  # five issued, one revoked
    revokes = documented(populated.get("/api/v1/audit", query_string={"action": "certificate.revoke"}), "/audit")
    assert [(e["actor"], e["detail"]["comment"]) for e in revokes["items"]] == [
        ("admin-token", "replaced by a new laptop")
    ]


# --- operations ---------------------------------------------------------------------------------------------


def test_operations_status(populated: Population) -> None:
    status = documented(populated.get("/api/v1/operations"), "/operations")
    assert (status["outbox"]["dead"], status["outbox"]["pending"]) == (1, 1)
    assert {e["id"]: e["state"] for e in status["outbox"]["entries"]} == {
        populated.dead_outbox: "dead", populated.pending_outbox: "pending"
    }
    assert {"ca", "ra"} <= {entry["credential"] for entry in status["expiry"]}


def test_outbox_retry_needs_admin_and_is_audited(fresh: Population, capsys: pytest.CaptureFixture[str]) -> None:
    path = f"/api/v1/operations/outbox/{fresh.dead_outbox}/retry"
    reader = fresh.token("reader", "read", "revoke", capsys=capsys)
    refused = fresh.post(path, headers=reader)
    assert refused.status_code == 403 and error_code(refused, "/operations/outbox/{id}/retry", "post") == "forbidden"
    admin = fresh.token("ops", "admin", capsys=capsys)
    answer = documented(fresh.post(path, headers=admin), "/operations/outbox/{id}/retry", "post")
    assert answer == {"id": fresh.dead_outbox, "state": "pending"}
    outbox = fresh.get("/api/v1/operations").get_json()["outbox"]
    assert (outbox["dead"], outbox["pending"]) == (0, 2)
    audit = fresh.get("/api/v1/audit", query_string={"action": "outbox.retry"}).get_json()["items"]
    assert [(entry["actor"], entry["source"]) for entry in audit] == [("token:ops", "api")]


@pytest.mark.parametrize(("outbox_id", "status", "code"), [("999", 404, "not_found"), ("0", 400, "invalid_parameter"),
                                                           ("x1", 400, "invalid_parameter")])
def test_outbox_retry_of_nothing(fresh: Population, outbox_id: str, status: int, code: str) -> None:
    response = fresh.post(f"/api/v1/operations/outbox/{outbox_id}/retry")
    assert response.status_code == status
    assert error_code(response, "/operations/outbox/{id}/retry", "post") == code


# --- parameters, tokens, errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "code", "named"), [
    ("/api/v1/certificates?colour=blue", "unknown_parameter", "colour"),
    ("/api/v1/operations?verbose=1", "unknown_parameter", "verbose"),
    ("/api/v1/openapi.json?x=1", "unknown_parameter", "x"),
    ("/api/v1/certificates?limit=1&limit=2", "repeated_parameter", "limit"),
    ("/api/v1/enrollments?profile=a&profile=a", "repeated_parameter", "profile"),
    ("/api/v1/certificates?limit=0", "invalid_parameter", "limit"),
    ("/api/v1/certificates?limit=1001", "invalid_parameter", "limit"),
    ("/api/v1/certificates?limit=%C2%B2", "invalid_parameter", "limit"),
    ("/api/v1/certificates?status=lost", "invalid_parameter", "status"),
    ("/api/v1/certificates?format=xml", "invalid_parameter", "format"),
    ("/api/v1/certificates?thumbprint=abc", "invalid_parameter", "thumbprint"),
    ("/api/v1/certificates?issued_since=yesterday", "invalid_parameter", "issued_since"),
    ("/api/v1/certificates?issued_since=2026-01-01T00:00:00", "invalid_parameter", "issued_since"),
    ("/api/v1/certificates?issued_since=1h&issued_until=2h", "invalid_parameter", "issued_since"),
    ("/api/v1/certificates?cursor=not-a-cursor", "invalid_parameter", "cursor"),
    ("/api/v1/certificates?subject=", "invalid_parameter", "subject"),
    ("/api/v1/certificates?subject=a%00b", "invalid_parameter", "subject"),
    ("/api/v1/enrollments?outcome=success", "invalid_parameter", "outcome"),
    ("/api/v1/audit?since=1h&until=2h", "invalid_parameter", "since"),
])
def test_bad_parameters_are_400_json_naming_them(populated: Population, url: str, code: str, named: str) -> None:
    response = populated.get(url)
    path = url.split("?")[0].removeprefix(openapi.BASE)
    assert response.status_code == 400 and error_code(response, path) == code
    assert named in response.get_json()["error"]["message"]


def test_tokens_and_scopes(populated: Population, capsys: pytest.CaptureFixture[str]) -> None:
    missing = populated.get("/api/v1/certificates", headers={})
    assert missing.status_code == 401 and error_code(missing, "/certificates") == "unauthorized"
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="scep-server-admin"'
    wrong = populated.get("/api/v1/audit", headers={"Authorization": f"Basic {TOKEN}"})
    assert wrong.status_code == 401 and error_code(wrong, "/audit") == "unauthorized"
    revoker = populated.token("revoker-only", "revoke", capsys=capsys)
    refused = populated.get("/api/v1/enrollments", headers=revoker)
    assert refused.status_code == 403 and error_code(refused, "/enrollments") == "forbidden"
    reader = populated.token("reader-only", "read", capsys=capsys)
    assert populated.get("/api/v1/enrollments", headers=reader).status_code == 200
    cannot = populated.post(f"/api/v1/certificates/{populated.serial('alpha')}/revoke", headers=reader)
    assert cannot.status_code == 403 and error_code(cannot, "/certificates/{serial}/revoke", "post") == "forbidden"
    # A refused request's parameters are not looked at: the token comes first.
    assert populated.get("/api/v1/certificates?colour=blue", headers={}).status_code == 401


def test_the_document_needs_no_token(populated: Population) -> None:
    response = populated.get("/api/v1/openapi.json", headers={})
    assert response.status_code == 200 and response.get_json() == DOCUMENT


def test_other_errors_under_api_are_json_too(populated: Population) -> None:
    nowhere = populated.get("/api/v1/nowhere")
    assert nowhere.status_code == 404 and nowhere.get_json()["error"]["code"] == "not_found"
    wrong_method = populated.server.http.delete("/api/v1/certificates", headers=AUTH)
    assert wrong_method.status_code == 405 and wrong_method.get_json()["error"]["code"] == "method_not_allowed"
    assert "GET" in wrong_method.headers["Allow"]
    # /admin keeps its plain-text errors.
    legacy = populated.get("/admin/certificates?limit=0")
    assert legacy.status_code == 400 and legacy.mimetype == "text/plain"


def test_a_body_over_the_limit_is_413_json(fresh: Population) -> None:
    too_big = "x" * (fresh.server.runtime.config.max_body_bytes + 1)
    response = fresh.post(f"/api/v1/certificates/{fresh.serial('alpha')}/revoke", data=too_big,
                          content_type="application/json")
    assert response.status_code == 413
    assert error_code(response, "/certificates/{serial}/revoke", "post") == "payload_too_large"


def test_api_is_off_without_tokens(server: ScepTestServer) -> None:
    for path in ("/api/v1/certificates", "/api/v1/openapi.json", "/api/v1/operations"):
        response = server.http.get(path)
        assert response.status_code == 404 and error_code(response, path.removeprefix(openapi.BASE)) == "not_found"


def test_dates_in_answers_are_utc_and_recent(populated: Population) -> None:
    items = populated.get("/api/v1/certificates").get_json()["items"]
    issued = [datetime.fromisoformat(item["issued_at"]) for item in items]
    assert all(timedelta(0) <= datetime.now(UTC) - moment < timedelta(hours=1) for moment in issued)
    assert all(moment.utcoffset() == timedelta(0) for moment in issued)


def test_a_row_names_what_the_certificate_says(populated: Population) -> None:
    laptop = populated.certificates["laptop-7"]
    row = populated.get(f"/api/v1/certificates/{populated.serial('laptop-7')}").get_json()
    assert row["subject"] == laptop.subject.rfc4514_string() == "CN=laptop-7"
    assert row["sha256_thumbprint"] == laptop.fingerprint(hashes.SHA256()).hex().upper()
    assert row["sans"] == ["dns:laptop-7.corp.example", f"uri:IntuneDeviceId://{populated.device_id}"]


def test_every_write_names_the_scope_it_needs(populated: Population) -> None:
    app = populated.server.http.application
    writes = {rule.endpoint.rpartition(".")[2] for rule in app.url_map.iter_rules()
              if rule.endpoint.startswith("api_v1.") and rule.methods and "POST" in rule.methods}
    assert writes and writes <= set(api_v1.SCOPES)  # none falls back to the default
