"""A configured SCEP profile, ready to serve: what it validates, issues and accepts on the wire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from scep_server.ca.policy import IssuancePolicy
from scep_server.challenge import ChallengeValidator
from scep_server.config.model import DeviceIdConfig
from scep_server.scep.message import DecodeOptions

__all__ = ["GetCertScope", "Profile"]


class GetCertScope(StrEnum):
    """Which certificates a profile's GetCert hands out (always only certificates of that profile)."""

    OWN = "own"  # the requester's own: same public key as the signer, or same subject as the signer's certificate
    ANY = "any"  # any certificate of the profile, to anyone who asks (a directory of peers' certificates)


@dataclass(frozen=True, slots=True)
class Profile:
    """A configured SCEP profile, ready to serve.

    ``decode``: what the profile accepts in the envelope (ciphers, digests, clock skew), assembled with the
    profile at startup and read where pkiMessages are decoded and capabilities announced.
    ``require_signer_subject``: a PKCSReq signed with its CSR's key must carry the CSR's subject in that
    self-signed certificate too; off by default because Apple devices and micromdm's scepclient sign with a
    fixed ``CN=SCEP SIGNER`` name.
    """

    name: str
    validator: ChallengeValidator
    policy: IssuancePolicy
    decode: DecodeOptions
    allow_renewal: bool
    defer_when_unavailable: bool = False
    pending_timeout: timedelta = timedelta(hours=1)
    get_cert: GetCertScope = GetCertScope.OWN
    require_signer_subject: bool = False
    device_id: DeviceIdConfig = DeviceIdConfig()  # how its certificates name their device (ca/device_ids.py)
