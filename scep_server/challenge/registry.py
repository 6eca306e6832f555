"""Build the validator a profile asks for."""

from __future__ import annotations

from ..config import ProfileConfig
from ..errors import ConfigError
from . import ChallengeValidator
from .static import StaticChallenge


def build_validator(profile: ProfileConfig) -> ChallengeValidator:
    """The validator of ``profile``; ConfigError when it cannot be built (a missing secret, say)."""
    settings = profile.challenge
    if settings.type == "static":
        secret = settings.secret.resolve()
        if not secret:
            source = settings.secret.env or settings.secret.file or "challenge.secret"
            raise ConfigError(f"profile {profile.name!r}: no static challenge secret (set {source})")
        return StaticChallenge(secret)
    raise ConfigError(f"profile {profile.name!r}: unknown challenge type {settings.type!r}")
