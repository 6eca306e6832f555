"""``python -m scep_server.simulator``: the ``scep-simulator`` console script."""

from __future__ import annotations

from scep_server.simulator.cli import main

raise SystemExit(main())
