"""The ``webhook`` challenge's contract for the layers that describe it (the admin API's OpenAPI document):
the two JSON documents and the three signature headers, from :mod:`scep_server.challenge`, which the web
layer does not import. Every call returns a new copy, so a caller may change its own."""

from __future__ import annotations

import copy
from typing import Any

from scep_server.challenge.webhook import MAX_ANSWER_BYTES
from scep_server.challenge.webhook_schema import ANSWER_SCHEMA, REQUEST_SCHEMA
from scep_server.challenge.webhook_signature import (
    DEFAULT_TOLERANCE,
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    SIGNATURE_VERSION,
    TIMESTAMP_HEADER,
)

__all__ = [
    "DELIVERY_HEADER",
    "MAX_ANSWER_BYTES",
    "SIGNATURE_HEADER",
    "SIGNATURE_VERSION",
    "TIMESTAMP_HEADER",
    "TOLERANCE_SECONDS",
    "answer_schema",
    "request_schema",
]

TOLERANCE_SECONDS = DEFAULT_TOLERANCE  # how far a receiver should let a delivery's timestamp be off


def request_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of what the server POSTs to the webhook."""
    return copy.deepcopy(REQUEST_SCHEMA)


def answer_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of the only answer the server acts on."""
    return copy.deepcopy(ANSWER_SCHEMA)
