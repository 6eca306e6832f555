"""The ``static`` validator: one shared secret per profile, compared in constant time."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field

from scep_server.challenge import (
    ChallengeValidator,
    IssuedCertificate,
    Resources,
    ValidationRequest,
    challenge_password,
    register,
)
from scep_server.config.model import ChallengeConfig, SecretSource
from scep_server.config.parsing import parser
from scep_server.errors import ChallengeRejected, ConfigError

__all__ = ["StaticChallenge", "StaticChallengeConfig"]


@dataclass(frozen=True, slots=True)
class StaticChallengeConfig(ChallengeConfig):
    """``challenge: {type: static, secret: ...}``: the shared secret every device of the profile sends."""

    type: str = "static"
    secret: SecretSource = field(
        default_factory=lambda: SecretSource(env="SCEP_CHALLENGE"), metadata=parser(SecretSource.parse)
    )


@register
class StaticChallenge:
    """Accept a request whose challengePassword equals the profile's shared secret."""

    name = "static"
    confirms_issuance = False
    validates_renewals = False
    settings_class = StaticChallengeConfig
    may_be_unavailable = False

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ConfigError("the static challenge secret is empty")
        self._secret = secret.encode("utf-8")

    @classmethod
    def from_settings(cls, profile: str, settings: ChallengeConfig, resources: Resources) -> ChallengeValidator:
        """The validator with the profile's secret; ConfigError when the secret is not set."""
        if not isinstance(settings, StaticChallengeConfig):
            raise TypeError(f"the static challenge takes StaticChallengeConfig, not {type(settings).__name__}")
        secret = settings.secret.resolve()
        if not secret:
            source = settings.secret.env or settings.secret.file or "challenge.secret"
            raise ConfigError(f"profile {profile!r}: no static challenge secret (set {source})")
        return cls(secret)

    def validate(self, request: ValidationRequest) -> None:
        offered = challenge_password(request.csr)
        if offered is None:
            raise ChallengeRejected("the request has no challengePassword", reason="ChallengePasswordMissing")
        if not hmac.compare_digest(offered.encode("utf-8"), self._secret):
            raise ChallengeRejected("the challengePassword does not match", reason="ChallengePasswordMismatch")

    def notify_issued(self, request: ValidationRequest, issued: IssuedCertificate) -> None:
        """A shared secret has nobody to tell."""

    def notify_failed(self, request: ValidationRequest, hresult: int, description: str) -> None:
        """A shared secret has nobody to tell."""
