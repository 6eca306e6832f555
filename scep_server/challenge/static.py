"""The ``static`` validator: one shared secret per profile, compared in constant time."""

from __future__ import annotations

import hmac

from scep_server.challenge import IssuedCertificate, ValidationRequest, challenge_password
from scep_server.errors import ChallengeRejected, ConfigError


class StaticChallenge:
    """Accept a request whose challengePassword equals the profile's shared secret."""

    name = "static"
    validates_renewals = False

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ConfigError("the static challenge secret is empty")
        self._secret = secret.encode("utf-8")

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
