"""HTTP surface: the Flask app factory and one blueprint per surface."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app
from werkzeug.exceptions import HTTPException

from scep_server.config import ServerConfig, load_config
from scep_server.errors import RequestError, StoreError, UpstreamError
from scep_server.runtime import Runtime, build_runtime

log = logging.getLogger("scep_server.web")

__all__ = ["create_app", "runtime"]


def create_app(
    config: ServerConfig | None = None, *, runtime_override: Runtime | None = None, start_background: bool = True
) -> Flask:
    """Build the WSGI app. With no config, load it from SCEP_SERVER_CONFIG (or embedded defaults)."""
    import os

    from scep_server.web import admin, ca_files, health, ocsp, scep
    from scep_server.web import prometheus as metrics

    config = config or load_config(os.environ.get("SCEP_SERVER_CONFIG"))
    app = Flask("scep_server")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    if config.trusted_proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Requester IPs in logs and the store come from X-Forwarded-For only behind trusted proxies.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=config.trusted_proxy_hops, x_proto=config.trusted_proxy_hops
        )
    current = runtime_override or build_runtime(config)
    app.extensions["scep_server"] = current
    if start_background:
        current.background.start()
    _publish_expiry(current)
    for blueprint in (scep.bp, ca_files.bp, ocsp.bp, health.bp, metrics.bp, admin.bp):
        app.register_blueprint(blueprint)
    _register_error_handlers(app)
    return app


def _publish_expiry(current: Runtime) -> None:
    from scep_server import metrics

    metrics.CA_EXPIRY.labels("ca").set(current.ca.ca_cert.not_valid_after_utc.timestamp())
    metrics.CA_EXPIRY.labels("ra").set(current.ca.ra_cert.not_valid_after_utc.timestamp())


def runtime() -> Runtime:
    """The Runtime of the app handling the current request."""
    value = current_app.extensions["scep_server"]
    assert isinstance(value, Runtime)
    return value


def _text(status: int, body: str, headers: dict[str, str] | None = None) -> Response:
    return Response(body + "\n", status=status, mimetype="text/plain", headers=headers)


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(RequestError)
    def request_error(exc: RequestError) -> Response:
        log.warning("rejected request: %s", exc)
        return _text(exc.status_code, str(exc))

    @app.errorhandler(UpstreamError)
    def upstream_error(exc: UpstreamError) -> Response:
        log.error("dependency unavailable: %s", exc.detail)
        return _text(503, "service temporarily unavailable", {"Retry-After": str(int(exc.retry_after or 30))})

    @app.errorhandler(StoreError)
    def store_error(exc: StoreError) -> Response:
        log.error("store failure: %s", exc)
        return _text(503, "service temporarily unavailable", {"Retry-After": "30"})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        return _text(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unexpected error")
        return _text(500, "internal error")
