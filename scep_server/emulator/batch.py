"""Graph's JSON batching: ``POST /graph/{v}/$batch`` (fault endpoint ``graph.batch``).

::

    {"requests": [{"id": "1", "method": "GET", "url": "/devices(deviceId='...')", "headers"?: {...},
                   "dependsOn"?: ["0"]}, ...]}
    -> 200 {"responses": [{"id": "1", "status": 200, "headers": {"Content-Type": ...}, "body": {...}}, ...]}

The batch needs a Graph token (401 otherwise); each request then runs as if sent on its own, with the
batch's ``Authorization`` and ``client-request-id``: it is counted, faulted and authorized as its own
endpoint, so a throttled request answers 429 inside the batch with its own ``Retry-After`` among its
``headers``, and one without the permission 403. At most ``MAX_REQUESTS`` requests: more, an empty
list, a repeated id (ids compare case-insensitively), a request without ``id``/``method``/``url`` or a
``dependsOn`` naming no earlier request answer 400 for the whole batch, and nothing runs. A request
whose dependency did not succeed answers 424. Responses come in request order (Graph may reorder
them: match them by ``id``). A ``url`` must be relative to the version (``/devices`` or ``devices``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.datastructures import Headers
from werkzeug.test import EnvironBuilder, run_wsgi_app

from scep_server.emulator.graph_devices import GRAPH_VERSIONS
from scep_server.emulator.odata import GraphQueryError
from scep_server.emulator.tokens import AccessDenied
from scep_server.emulator.wire import Surface, denied, emulator, endpoint, error, json_body, origin

batch = Blueprint("graph_batch", __name__, url_prefix="/graph")
MAX_REQUESTS = 20
_PASSED_HEADERS = ("Content-Type", "Retry-After", "WWW-Authenticate")


@dataclass(frozen=True, slots=True)
class BatchRequest:
    id: str
    method: str
    url: str
    headers: Mapping[str, str]
    depends_on: tuple[str, ...]


@batch.post("/<version>/$batch")
@endpoint("graph.batch", Surface.GRAPH)
def json_batch(version: str) -> Response:
    emulator().authorize(request.headers.get("Authorization"), resource="graph", role=None, origin=origin())
    if version not in GRAPH_VERSIONS:
        raise GraphQueryError(f"Invalid version: {version}")
    statuses: dict[str, int] = {}
    responses = []
    for item in parse_batch(json_body()):
        failed = [d for d in item.depends_on if not 200 <= statuses[d.lower()] < 300]
        answer = _failed_dependency(item, failed) if failed else _run(version, item)
        statuses[item.id.lower()] = answer["status"]
        responses.append(answer)
    return jsonify(responses=responses)


def parse_batch(body: Any) -> list[BatchRequest]:
    """The batch's requests, checked as a whole; ``GraphQueryError`` (400) when it is not valid."""
    requests = body.get("requests") if isinstance(body, Mapping) else None
    if not isinstance(requests, list) or not requests:
        raise GraphQueryError("Invalid batch payload format: the body must be {\"requests\": [...]}.")
    if len(requests) > MAX_REQUESTS:
        raise GraphQueryError(f"Invalid batch payload: {len(requests)} requests; a batch holds at most "
                              f"{MAX_REQUESTS}.")
    parsed: list[BatchRequest] = []
    for index, item in enumerate(requests):
        parsed.append(_batch_request(item, index, {p.id.lower() for p in parsed}))
    return parsed


def _batch_request(item: Any, index: int, earlier: set[str]) -> BatchRequest:
    where = f"requests[{index}]"
    if not isinstance(item, Mapping) or not all(isinstance(item.get(k), str) and item[k] for k in ("id", "method",
                                                                                                   "url")):
        raise GraphQueryError(f"Invalid batch payload format: {where} needs a string id, method and url.")
    if item["id"].lower() in earlier:
        raise GraphQueryError(f"Invalid batch payload: the request id {item['id']!r} is repeated.")
    headers, depends_on = item.get("headers", {}), item.get("dependsOn", [])
    if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
        raise GraphQueryError(f"Invalid batch payload format: {where}.headers must map names to strings.")
    if not isinstance(depends_on, list) or not all(isinstance(d, str) and d.lower() in earlier for d in depends_on):
        raise GraphQueryError(f"Invalid batch payload: {where}.dependsOn must name earlier requests.")
    return BatchRequest(item["id"], item["method"].upper(), item["url"], dict(headers), tuple(depends_on))


def _run(version: str, item: BatchRequest) -> dict[str, Any]:
    url = urlsplit(item.url)
    if url.scheme or url.netloc or "$batch" in url.path or ".." in url.path.split("/"):
        return _answer(item, 400, {"error": {"code": "BadRequest",
                                             "message": "A batch request's url must be relative to the version."}})
    headers = {**item.headers, "Authorization": request.headers.get("Authorization", ""),
               "client-request-id": request.headers.get("client-request-id", "")}
    environ = EnvironBuilder(path=f"/graph/{version}/{url.path.lstrip('/')}", query_string=url.query,
                             method=item.method, base_url=request.host_url, headers=Headers(headers)).get_environ()
    body, status, response_headers = run_wsgi_app(current_app.wsgi_app, environ, buffered=True)
    try:
        text = b"".join(body).decode()
    finally:
        getattr(body, "close", lambda: None)()
    passed = {name: response_headers[name] for name in _PASSED_HEADERS if name in response_headers}
    return {"id": item.id, "status": int(status.split(" ", 1)[0]), "headers": passed, "body": _json_or_text(text)}


def _failed_dependency(item: BatchRequest, failed: list[str]) -> dict[str, Any]:
    message = f"The request depends on {', '.join(failed)}, which failed."
    return _answer(item, 424, {"error": {"code": "FailedDependency", "message": message}})


def _answer(item: BatchRequest, status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"id": item.id, "status": status, "headers": {"Content-Type": "application/json"}, "body": body}


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def _query_error(exc: GraphQueryError) -> Response:
    return error(Surface.GRAPH, exc.status, exc.message, code=exc.code)


def _access_denied(exc: AccessDenied) -> Response:
    return denied(Surface.GRAPH, exc)


batch.register_error_handler(GraphQueryError, _query_error)
batch.register_error_handler(AccessDenied, _access_denied)
