"""The OpenAPI 3.1 document of /api/v1: it validates, it describes every route the server has, the
parameter checks are the document's, and a property-based run over every operation (schemathesis, on the
live app with real data) finds no 5xx and no answer that departs from the document."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, given, settings
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

from scep_server.config import SecretSource
from scep_server.web import openapi

from .conftest import make_config, serving
from .test_api_v1 import AUTH, DOCUMENT, TOKEN, Population, _populate

CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
    response_headers_conformance, ignored_auth, negative_data_rejection,
]
MAX_EXAMPLES = 25  # per operation and mode: the whole file stays well under a minute


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
    return path.replace(">", "}").replace("{outbox_id}", "{id}")


def test_every_operation_declares_its_errors_and_security() -> None:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert {"200", "400", "404"} <= set(responses), (path, method)
            if operation["security"]:
                assert {"401", "403"} <= set(responses), (path, method)
                assert responses["401"]["headers"]["WWW-Authenticate"]
            for status, answer in responses.items():
                if status != "200":
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
    with serving(replace(make_config(tmp_path), admin_token=SecretSource(value=TOKEN))) as server:
        yield _populate(server, tmp_path)


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
        answered.append(case.call_and_validate(checks=CHECKS).status_code)

    run()
    assert answered, label
    if mode is GenerationMode.NEGATIVE:
        # negative_data_rejection judges each case (a mutation can vanish when sent: an empty list
        # parameter is no parameter); here, only that invalid requests were made and refused at all.
        assert {400, 404} & set(answered), answered
