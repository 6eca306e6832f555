"""WSGI entry for gunicorn: the app of ``$SCEP_SERVER_CONFIG`` with the OCSP responder mounted.

``gunicorn tests.interop.ocsp_wsgi:app`` builds it in each worker after the fork, as ``serve`` does.
"""

from __future__ import annotations

import os

from scep_server.config import load_config
from tests.functional.revocation_app import create_revocation_app

app = create_revocation_app(load_config(os.environ["SCEP_SERVER_CONFIG"]))
