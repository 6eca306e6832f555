"""What every test shares: each starts with no log context bound in its thread.

A request another test answered through Flask's test client keeps its request id and profile bound
until its response is closed, which a test need not do (a server closes every response)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scep_server import logs


@pytest.fixture(autouse=True)
def _no_log_context_from_earlier_tests() -> Iterator[None]:
    token = logs.fresh_context()
    yield
    logs.unbind(token)
