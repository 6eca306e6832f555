"""The OpenAPI 3.1 document of /api/v1: it validates, it describes every route the server has, the
parameter checks are the document's, and a property-based run over every operation (schemathesis, on the
live app with real data, one-time passwords of an otp profile included) finds no 5xx and no answer that
departs from the document."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from flask import Flask
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from scep_server.challenge import ValidationRequest
from scep_server.challenge.webhook_messages import request_document
from scep_server.challenge.webhook_schema import ANSWER_SCHEMA, REQUEST_SCHEMA
from scep_server.challenge.webhook_signature import signed_headers
from scep_server.config import SecretSource
from scep_server.web import openapi
from tests.support import pki

from .conftest import CONFIG, make_config, serving
from .test_api_v1 import _REGISTRY, AUTH, DOCUMENT, TOKEN, Population, _pointer, _populate

CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
    response_headers_conformance, ignored_auth, negative_data_rejection,
]
MAX_EXAMPLES = 25  # per operation and mode: the whole file stays well under a minute
OTP_PROFILE = "kiosks"
# The functional tests' profiles and one with the otp challenge, for the one-time password calls to mint for.
WITH_OTP_PROFILE = CONFIG + f"""  {OTP_PROFILE}:
    challenge: {{{{type: otp}}}}
"""


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.1")


def test_every_route_is_documented_and_every_documented_path_exists(populated: Population) -> None:
    app: Flask = populated.server.http.application
    routes = {
        (_openapi_path(rule.rule), method.lower())
        for rule in app.url_map.iter_rules() if rule.rule.startswith(openapi.BASE + "/")
        for method in rule.methods or () if method not in ("HEAD", "OPTIONS")
    }
    described = {(path, method) for path, item in DOCUMENT["paths"].items() for method in item}
    assert routes == described


def _openapi_path(rule: str) -> str:
    """A Flask rule as the document writes its path: ``/certificates/<serial>`` is ``/certificates/{serial}``."""
    path = rule.removeprefix(openapi.BASE)
    for converter in ("path:", ""):
        path = path.replace(f"<{converter}", "{")
    return path.replace(">", "}").replace("{outbox_id}", "{id}").replace("{otp_id}", "{id}")


def test_every_operation_declares_its_errors_and_security() -> None:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            success = "201" if operation["operationId"] == "create_otps" else "200"
            assert {success, "400", "404"} <= set(responses), (path, method)
            if operation["security"]:
                assert {"401", "403"} <= set(responses), (path, method)
                assert responses["401"]["headers"]["WWW-Authenticate"]
            for status, answer in responses.items():
                if status != success:
                    assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_closed_schemas_are_closed() -> None:
    """Every object schema with fixed properties refuses others, so a new field cannot slip out unnoticed."""
    def walk(schema: Any) -> Iterator[dict[str, Any]]:
        if isinstance(schema, dict):
            if schema.get("type") == "object" and "properties" in schema:
                yield schema
            for value in schema.values():
                yield from walk(value)
        elif isinstance(schema, list):
            for value in schema:
                yield from walk(value)

    objects = list(walk(DOCUMENT["components"]["schemas"]))
    assert len(objects) > 10 and all(schema["additionalProperties"] is False for schema in objects)


def schema_at(*parts: str) -> Draft202012Validator:
    """A validator of the schema at ``parts`` in the document, its references resolved in the document."""
    return Draft202012Validator({"$ref": f"urn:scep-server:api#/{_pointer(*parts)}"}, registry=_REGISTRY,
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_the_webhook_documents_are_the_validators_own_and_webhooks_describes_its_post() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    assert (schemas["WebhookRequest"], schemas["WebhookAnswer"]) == (REQUEST_SCHEMA, ANSWER_SCHEMA)
    assert "#/components/schemas/WebhookRequest" in DOCUMENT["info"]["description"]
    post = DOCUMENT["webhooks"]["challengeValidation"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/WebhookRequest"}
    assert post["responses"]["2XX"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/WebhookAnswer"}
    sent = signed_headers(b"a shared secret of the profile", b"{}", timestamp=1740830400,
                          delivery_id=str(uuid.uuid4()))
    documented_headers = {p["name"]: p["schema"]["pattern"] for p in post["parameters"] if p["in"] == "header"}
    assert set(documented_headers) == set(sent)
    assert all(re.search(pattern, sent[name]) for name, pattern in documented_headers.items()), sent


def test_what_the_validator_sends_meets_the_documents_webhook_schema() -> None:
    csr = pki.csr(pki.shared_key(), "CN=kiosk-7,O=Corp", sans=[x509.DNSName("kiosk-7.corp.example")],
                  challenge="one-time")
    request = ValidationRequest("corp", "tx-1", csr, csr.public_bytes(Encoding.DER), "192.0.2.7")
    body = request_document(request, datetime.now(UTC))
    webhook = ("webhooks", "challengeValidation", "post")
    schema_at(*webhook, "requestBody", "content", "application/json", "schema").validate(body)
    answer = schema_at(*webhook, "responses", "2XX", "content", "application/json", "schema")
    answer.validate({"allow": True, "sans": [{"type": "dns", "value": "kiosk-7.corp.example"}], "validity_days": 30})
    assert not answer.is_valid({"allow": True, "certify": "everything"})


@pytest.mark.parametrize(("operation", "parameter", "value"), [
    ("list_certificates", "limit", "1000"), ("list_certificates", "limit", "1"),
    ("list_certificates", "thumbprint", "aa:" * 19 + "aa"), ("list_enrollments", "fail_info", "badCertId"),
    ("list_certificates", "serial", "0x1F"), ("list_audit", "since", "2026-05-01T08:00:00+02:00"),
])
def test_documented_values_are_accepted(populated: Population, operation: str, parameter: str, value: str) -> None:
    path = next(p for p, item in DOCUMENT["paths"].items() if item.get("get", {}).get("operationId") == operation)
    response = populated.get(openapi.BASE + path, query_string={parameter: value})
    assert response.status_code == 200, response.get_json()


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Population]:
    tmp_path = tmp_path_factory.mktemp("api-v1-openapi")
    with serving(replace(make_config(tmp_path, WITH_OTP_PROFILE), admin_token=SecretSource(value=TOKEN))) as server:
        population = _populate(server, tmp_path)
        minted = population.post(f"{openapi.BASE}/otp", json={"profile": OTP_PROFILE, "count": 3})
        assert minted.status_code == 201, minted.get_json()
        [newest, *_] = population.get(f"{openapi.BASE}/otp").get_json()["items"]
        assert population.post(f"{openapi.BASE}/otp/{newest['id']}/revoke").status_code == 200
        yield population


@pytest.fixture(scope="module")
def live_schema(populated: Population) -> schemathesis.BaseSchema:
    """The document as the live app serves it; requests made from it go to that app."""
    return schemathesis.openapi.from_wsgi(f"{openapi.BASE}/openapi.json", populated.server.http.application)


def _operations() -> list[tuple[str, GenerationMode]]:
    """Every documented operation, with valid data and (where it takes any) with invalid data."""
    wanted = []
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if operation["operationId"] == "openapi_document":
                continue  # where the run reads the document from
            wanted.append((f"{method.upper()} {path}", GenerationMode.POSITIVE))
            if operation.get("parameters") or operation.get("requestBody"):
                wanted.append((f"{method.upper()} {path}", GenerationMode.NEGATIVE))
    return wanted


# schemathesis' own pytest integration (schemathesis.pytest.from_fixture) does not run under pytest 9,
# so the run drives its case strategies and checks with Hypothesis directly.
@pytest.mark.parametrize(("label", "mode"), _operations(), ids=lambda value: getattr(value, "value", value))
def test_the_api_answers_as_documented(live_schema: schemathesis.BaseSchema, label: str,
                                       mode: GenerationMode) -> None:
    operation = live_schema.find_operation_by_label(label)
    assert operation is not None, label
    answered: list[int] = []

    @given(case=operation.as_strategy(mode, headers=AUTH))
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    def run(case: schemathesis.Case[Any]) -> None:
        if mints and isinstance(case.body, dict):
            case.body["profile"] = OTP_PROFILE  # still a valid body, now one for a profile that mints
        answered.append(case.call_and_validate(checks=CHECKS).status_code)

    mints = label == "POST /otp" and mode is GenerationMode.POSITIVE
    run()
    assert answered, label
    if mints:
        assert 201 in answered, answered  # the run minted, beyond the refusals of out-of-range lifetimes
    if mode is GenerationMode.NEGATIVE:
        # negative_data_rejection judges each case (a mutation can vanish when sent: an empty list
        # parameter is no parameter); here, only that invalid requests were made and refused at all.
        assert {400, 404} & set(answered), answered
