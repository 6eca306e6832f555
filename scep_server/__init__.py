"""scep-server: an RFC 8894 SCEP certificate authority with Microsoft Intune challenge validation."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
