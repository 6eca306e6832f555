"""HTTP surface: the Flask app factory and one blueprint per surface."""

from __future__ import annotations

import os

from flask import Flask

from scep_server.config import ServerConfig, load_config
from scep_server.runtime import Runtime, build_runtime
from scep_server.web import admin, api_v1, ca_files, console, errors, health, ocsp, prometheus, scep
from scep_server.web.context import RUNTIME_EXTENSION
from scep_server.web.request_ids import RequestIds

__all__ = ["create_app"]

# One Blueprint per surface.
BLUEPRINTS = (scep.bp, ca_files.bp, ocsp.bp, health.bp, prometheus.bp, admin.bp, api_v1.bp, console.bp)


def create_app(
    config: ServerConfig | None = None, *, runtime_override: Runtime | None = None, start_background: bool = True
) -> Flask:
    """Build the WSGI app. With no config, load it from SCEP_SERVER_CONFIG (or embedded defaults)."""
    config = config or load_config(os.environ.get("SCEP_SERVER_CONFIG"))
    app = Flask("scep_server")
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    current = runtime_override or build_runtime(config)
    app.extensions[RUNTIME_EXTENSION] = current
    # Inside ProxyFix, so that the access log names the same client for a cached OCSP answer.
    app.wsgi_app = ocsp.CachedAnswers(app.wsgi_app, current.ocsp, config.max_body_bytes)  # type: ignore[method-assign]
    if config.trusted_proxy_hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Requester IPs in logs and the store come from X-Forwarded-For only behind trusted proxies.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=config.trusted_proxy_hops, x_proto=config.trusted_proxy_hops
        )
    # Outermost: the cached OCSP answers get their request id too, and the log context lasts until the
    # response is written.
    app.wsgi_app = RequestIds(app.wsgi_app)  # type: ignore[method-assign]
    if start_background:
        current.background.start()
    prometheus.publish_expiry(current)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    errors.register(app)
    return app


