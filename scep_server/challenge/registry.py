"""Build the validator a profile asks for."""

from __future__ import annotations

from scep_server.challenge import ChallengeValidator
from scep_server.challenge.static import StaticChallenge
from scep_server.config import ProfileConfig
from scep_server.errors import ConfigError


def build_validator(profile: ProfileConfig, *, intune: ChallengeValidator | None = None) -> ChallengeValidator:
    """The validator of ``profile``; ConfigError when it cannot be built (a missing secret, say)."""
    settings = profile.challenge
    if settings.type == "static":
        secret = settings.secret.resolve()
        if not secret:
            source = settings.secret.env or settings.secret.file or "challenge.secret"
            raise ConfigError(f"profile {profile.name!r}: no static challenge secret (set {source})")
        return StaticChallenge(secret)
    if settings.type == "intune":
        if intune is None:
            raise ConfigError(f"profile {profile.name!r}: the intune challenge needs the intune settings")
        return intune
    raise ConfigError(f"profile {profile.name!r}: unknown challenge type {settings.type!r}")
