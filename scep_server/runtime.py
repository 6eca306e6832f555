"""Wiring: turn a ServerConfig into the live objects one process serves with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from .ca.authority import CertificateAuthority, load_ca
from .ca.issue import IssuancePolicy
from .challenge.registry import build_validator
from .config import ProfileConfig, ServerConfig
from .enrollment import EnrollmentService, Profile
from .revocation import CrlCache
from .scep.message import DecodeOptions
from .store import Store


@dataclass(frozen=True, slots=True)
class Runtime:
    config: ServerConfig
    ca: CertificateAuthority
    store: Store
    profiles: dict[str, Profile]
    crls: CrlCache
    service: EnrollmentService

    def close(self) -> None:
        self.store.close()


def ca_passphrase(config: ServerConfig) -> bytes | None:
    value = config.ca.key_passphrase.resolve()
    return value.encode("utf-8") if value else None


def crl_url(config: ServerConfig) -> str | None:
    return f"{config.public_url.rstrip('/')}/crl/{config.ca.name}.crl" if config.public_url else None


def ca_issuers_url(config: ServerConfig) -> str | None:
    return f"{config.public_url.rstrip('/')}/ca/{config.ca.name}.crt" if config.public_url else None


def build_profile(config: ServerConfig, profile: ProfileConfig) -> Profile:
    policy = IssuancePolicy.from_profile(profile, crl_url=crl_url(config), ca_issuers_url=ca_issuers_url(config))
    decode = DecodeOptions(allow_des=profile.allow_des, allow_sha1=profile.allow_sha1)
    return Profile(profile.name, build_validator(profile), policy, decode, profile.allow_renewal)


def build_runtime(config: ServerConfig) -> Runtime:
    """Load the CA, open (and migrate) the store, build every profile. Raises ConfigError/CAError."""
    ca = load_ca(config.ca_dir, config.ca, ca_passphrase(config))
    profiles = {p.name: build_profile(config, p) for p in config.profiles}
    store = Store.open(config.effective_database_url)
    try:
        store.migrate()
    except Exception:
        store.close()
        raise
    validity = timedelta(hours=config.ca.crl_validity_hours)
    crls = CrlCache(ca, store, validity=validity, refresh=min(validity / 4, timedelta(hours=1)))
    return Runtime(config, ca, store, profiles, crls, EnrollmentService(ca, store, profiles, crls))
