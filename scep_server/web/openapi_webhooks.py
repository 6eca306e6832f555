"""The ``webhooks`` of the admin API's OpenAPI 3.1 document: the POST the ``webhook`` challenge makes to a
profile's ``challenge.url`` for each request it is to decide, its signature headers and the answers the
server acts on. The two JSON documents are ``components.schemas`` ``WebhookRequest`` and ``WebhookAnswer``,
the very schemas the validator writes and reads by (``scep_server.service.webhook_contract``);
docs/webhook-challenge.md explains them with examples."""

from __future__ import annotations

from typing import Any

from scep_server.service.webhook_contract import (
    DELIVERY_HEADER,
    MAX_ANSWER_BYTES,
    SIGNATURE_HEADER,
    SIGNATURE_VERSION,
    TIMESTAMP_HEADER,
    TOLERANCE_SECONDS,
    answer_schema,
    request_schema,
)

__all__ = ["SCHEMAS", "WEBHOOKS"]

REQUEST = "WebhookRequest"
ANSWER = "WebhookAnswer"
SCHEMAS: dict[str, dict[str, Any]] = {REQUEST: request_schema(), ANSWER: answer_schema()}


def _json(schema_name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}


def _header(name: str, description: str, pattern: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": True, "description": description,
            "schema": {"type": "string", "pattern": pattern}}


_HEADERS = [
    _header(TIMESTAMP_HEADER, "When the delivery was sent, in Unix seconds. Refuse one further than "
                              f"{TOLERANCE_SECONDS} seconds from your clock.", "^[0-9]{1,12}$"),
    _header(DELIVERY_HEADER, "The delivery's own id (a UUID), signed too: remember it to refuse a replay.",
            "^[A-Za-z0-9._-]{1,128}$"),
    _header(SIGNATURE_HEADER, f"`{SIGNATURE_VERSION}=` and the hex HMAC-SHA256, keyed with the UTF-8 bytes of "
                              "the profile's `challenge.secret`, of `<timestamp>.<id>.<body>` (the exact bytes "
                              "of the body).", f"^{SIGNATURE_VERSION}=[0-9a-f]{{64}}$"),
]
_DESCRIPTION = (
    f"The server POSTs one `{REQUEST}` (compact JSON) to the profile's `challenge.url` for each request the "
    "profile's `webhook` challenge is to decide, and issues only on an explicit allow. A receiver checks the "
    "three headers before it trusts the body (`scep_server.challenge.webhook_signature.verify` does it in "
    "Python). Redirects are not followed; an answer over "
    f"{MAX_ANSWER_BYTES // 1024} KiB, or one that is not a `{ANSWER}`, refuses the request (fail closed)."
)
WEBHOOKS: dict[str, Any] = {
    "challengeValidation": {"post": {
        "operationId": "webhook_challenge_validation",
        "summary": "Decide one SCEP request of a profile with the webhook challenge (sent by the server)",
        "description": _DESCRIPTION,
        "security": [],
        "parameters": _HEADERS,
        "requestBody": {"required": True, "description": "The request to decide.", "content": _json(REQUEST)},
        "responses": {
            "2XX": {"description": "A decision: `allow: true` issues (narrowed by `sans` and `validity_days`), "
                                   "`allow: false` refuses with the `reason`.", "content": _json(ANSWER)},
            "4XX": {"description": "`allow: false` refuses with the reason; anything else (an allow included) "
                                   "refuses too. 429 leaves the request undecided, like a 5XX.",
                    "content": _json(ANSWER)},
            "5XX": {"description": "Undecided: the request fails, or stays pending and is asked again in the "
                                   "background (`on_validator_unavailable: pending`, honouring `Retry-After`)."},
        },
    }},
}
