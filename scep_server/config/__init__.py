"""Configuration: frozen dataclasses (:mod:`.model`) loaded from a YAML file and the environment
(:mod:`.load`), with secrets taken from env or files.

Each challenge validator owns its section of a profile: it registers the class that parses it
(:mod:`.sections`), built from the field parsers of :mod:`.parsing`.
"""

from __future__ import annotations

from scep_server.config.load import INTUNE_ENV_NAMES, load_config
from scep_server.config.model import (
    CAConfig,
    ChallengeConfig,
    FailureBudgetConfig,
    IntuneConfig,
    KeyBackendConfig,
    KeyType,
    LimitsConfig,
    ProfileConfig,
    SecretSource,
    ServerConfig,
    UnavailablePolicy,
)

__all__ = [
    "INTUNE_ENV_NAMES",
    "CAConfig",
    "ChallengeConfig",
    "FailureBudgetConfig",
    "IntuneConfig",
    "KeyBackendConfig",
    "KeyType",
    "LimitsConfig",
    "ProfileConfig",
    "SecretSource",
    "ServerConfig",
    "UnavailablePolicy",
    "load_config",
]
