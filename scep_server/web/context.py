"""What a view reads from the app handling its request."""

from __future__ import annotations

from flask import current_app

from scep_server.runtime import Runtime

__all__ = ["RUNTIME_EXTENSION", "runtime"]

RUNTIME_EXTENSION = "scep_server"  # app.extensions key of the Runtime


def runtime() -> Runtime:
    """The Runtime of the app handling the current request."""
    value = current_app.extensions[RUNTIME_EXTENSION]
    if not isinstance(value, Runtime):
        raise TypeError(f"app.extensions[{RUNTIME_EXTENSION!r}] is not a Runtime")
    return value
