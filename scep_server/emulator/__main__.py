"""``python -m scep_server.emulator``: the ``scep-intune-emulator`` console script."""

from __future__ import annotations

from scep_server.emulator.cli import main

raise SystemExit(main())
