"""Microsoft's acceptance matrix for third-party CAs (TestMatrix.csv), one ``Row`` per scenario.

A row is an Intune SCEP profile (subject and SAN templates with Intune's ``{{Variable}}`` syntax, key
usage, EKU, key size, hash algorithm) plus the SCEP profile of ours it is served from, and what must
happen: a certificate honouring the profile, or (the four failure rows, intune-api.md §7) none, with
the emulator faults that provoke the failure. Every row differs from ``Row``'s defaults (CN from the
user name, a UPN SAN, digitalSignature + keyEncipherment, client authentication, RSA 2048, SHA-2, the
``intune`` profile) in the one setting it tests.
"""

from __future__ import annotations

import re
import secrets
import string
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from scep_server.intune.contract import ChallengeSpec
from scep_server.simulator.admin import Fault

__all__ = ["PROFILES", "ROWS", "DeviceIdentity", "Expect", "Row", "ScepProfile", "find_rows", "slug"]

CLIENT_AUTH = "1.3.6.1.5.5.7.3.2"
IPSEC_TUNNEL = "1.3.6.1.5.5.7.3.6"
DS, KE = "digital_signature", "key_encipherment"
HASH_CAPS = {"sha1": ("SHA-1",), "sha256": ("SHA-256", "SCEPStandard"), "sha512": ("SHA-512",)}
HASH_STRENGTH = ("sha512", "sha256", "sha1")
_VARIABLE = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True, slots=True)
class ScepProfile:
    """One of our SCEP profiles (``/scep/<name>``) as the rows need to know it: how long its
    certificates live and the hash it signs them with (config/dev.yaml's intune profiles)."""

    name: str
    validity_days: int = 365
    signature_hash: str = "sha256"


PROFILES = {
    "intune": ScepProfile("intune"),
    "intune-sha1": ScepProfile("intune-sha1", signature_hash="sha1"),
    "intune-short": ScepProfile("intune-short", validity_days=30),
}


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """The values Intune substitutes into a profile's ``{{Variable}}`` templates for one device."""

    user_name: str
    user_principal_name: str
    email_address: str
    imei: str
    serial_number: str
    device_name: str
    device_id: str
    aad_device_id: str
    user_id: str

    @classmethod
    def random(cls) -> DeviceIdentity:
        user = f"user-{secrets.token_hex(4)}"
        return cls(
            user_name=user,
            user_principal_name=f"{user}@contoso.onmicrosoft.com",
            email_address=f"{user}@contoso.com",
            imei=_imei(),
            serial_number="C02" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(9)),
            device_name=f"DESKTOP-{secrets.token_hex(4).upper()}",
            device_id=str(uuid.uuid4()),
            aad_device_id=str(uuid.uuid4()),
            user_id=str(uuid.uuid4()),
        )

    def variables(self) -> dict[str, str]:
        return {
            "UserName": self.user_name,
            "UserPrincipalName": self.user_principal_name,
            "EmailAddress": self.email_address,
            "IMEI": self.imei,
            "SerialNumber": self.serial_number,
            "DeviceName": self.device_name,
            "DeviceId": self.device_id,
            "AAD_Device_ID": self.aad_device_id,
        }

    def render(self, template: str) -> str:
        """``template`` with every ``{{Variable}}`` replaced; ``ValueError`` on an unknown variable."""
        values = self.variables()

        def value(match: re.Match[str]) -> str:
            if match.group(1) not in values:
                raise ValueError(f"unknown Intune variable {match.group(0)} (known: {', '.join(values)})")
            return values[match.group(1)]

        return _VARIABLE.sub(value, template)


class Expect(Enum):
    CERTIFICATE = "certificate"
    NO_CERTIFICATE = "no certificate"


@dataclass(frozen=True, slots=True)
class Row:
    """One TestMatrix scenario. ``hashes``: the hash algorithms the Intune profile allows the device,
    which uses the strongest the CA offers (GetCACaps) for its CSR and pkiMessage."""

    name: str
    profile: ScepProfile = PROFILES["intune"]
    subject: str = "CN={{UserName}}"
    sans: tuple[tuple[str, str], ...] = (("upn", "{{UserPrincipalName}}"),)
    key_usage: tuple[str, ...] = (DS, KE)
    extended_key_usage: tuple[str, ...] = (CLIENT_AUTH,)
    key_size: int = 2048
    hashes: tuple[str, ...] = ("sha256",)
    expect: Expect = Expect.CERTIFICATE
    faults: tuple[Fault, ...] = ()
    validation_code: str | None = None  # the validateRequest answer Intune must have recorded
    renewal: bool = False
    note: str = field(default="", compare=False)

    @property
    def slug(self) -> str:
        return slug(self.name)

    def challenge_spec(self, identity: DeviceIdentity, hash_name: str) -> ChallengeSpec:
        """What Intune puts in this device's challenge: the profile with the device's values filled in."""
        return ChallengeSpec(
            subject=identity.render(self.subject),
            sans=tuple((kind, identity.render(value)) for kind, value in self.sans),
            key_usage=self.key_usage,
            extended_key_usage=self.extended_key_usage,
            key_size=self.key_size,
            hash=hash_name,
            validity_days=self.profile.validity_days,
            device_id=identity.device_id,
            user_id=identity.user_id,
        )

    def pick_hash(self, caps: Iterable[str]) -> str | None:
        """The strongest of ``hashes`` the CA advertises; None when it offers none of them."""
        offered = set(caps)
        allowed = [h for h in HASH_STRENGTH if h in self.hashes]
        return next((h for h in allowed if offered & set(HASH_CAPS[h])), None)


def slug(name: str) -> str:
    """``"SN Format: IMEI"`` → ``"sn-format-imei"``: row names usable on a command line."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("&", " and ")).strip("-")


def _imei() -> str:
    """A 15-digit IMEI whose last digit is the Luhn check digit of the first 14."""
    body = [secrets.randbelow(10) for _ in range(14)]
    total = sum(d if i % 2 == 0 else sum(divmod(d * 2, 10)) for i, d in enumerate(body))
    return "".join(map(str, body)) + str((10 - total % 10) % 10)


_SHORT = PROFILES["intune-short"]
_SHA1 = PROFILES["intune-sha1"]
_FAILED = Expect.NO_CERTIFICATE
ROWS: tuple[Row, ...] = (
    Row("Validation Period Configuration", profile=_SHORT),
    Row("SN Format: Common Name", subject="CN={{UserName}}"),
    Row("SN Format: Common Name with email", subject="CN={{UserName}},E={{EmailAddress}}"),
    Row("SN Format: Common name as email", subject="CN={{EmailAddress}}"),
    Row("SN Format: IMEI", subject="CN={{IMEI}}"),
    Row("SN Format: Serial number", subject="CN={{SerialNumber}},SERIALNUMBER={{SerialNumber}}"),
    Row("SN Format: Custom",
         subject="CN={{DeviceName}},OU={{AAD_Device_ID}},O=Contoso\\, Ltd.,L=Redmond,ST=WA,C=US",
         sans=(("upn", "{{UserPrincipalName}}"), ("dns", "{{DeviceName}}.contoso.com"),
               ("uri", "IntuneDeviceId://{{DeviceId}}"))),
    Row("SAN: Email", sans=(("email", "{{EmailAddress}}"),)),
    Row("SAN: UPN", sans=(("upn", "{{UserPrincipalName}}"),)),
    Row("SAN: Email and UPN", sans=(("email", "{{EmailAddress}}"), ("upn", "{{UserPrincipalName}}"))),
    Row("Key Usage: Digital signature", key_usage=(DS,)),
    Row("Key Usage: Key encipherment", key_usage=(KE,)),
    Row("Key Usage: Digital signature and Key encipherment", key_usage=(DS, KE)),
    Row("Key Size: 1024", profile=_SHA1, key_size=1024, note="served by intune-sha1 (min_rsa_bits 1024)"),
    Row("Key Size: 2048", key_size=2048),
    Row("Hash Alg: SHA-1", profile=_SHA1, hashes=("sha1",)),
    Row("Hash Alg: SHA-2", hashes=("sha256",)),
    Row("Hash Alg: SHA-1 & SHA-2", hashes=("sha1", "sha256"), note="the device picks SHA-2 when the CA offers it"),
    Row("Extended Key Usage: Client Authentication", extended_key_usage=(CLIENT_AUTH,)),
    Row("Extended Key Usage: Ipsec Tunnel", extended_key_usage=(IPSEC_TUNNEL,)),
    Row("Renewal", profile=_SHORT, renewal=True,
         note="new key and new challenge, PKCSReq signed with the current certificate"),
    Row("Challenge Authentication Failure", expect=_FAILED, validation_code="ChallengeDecryptionError",
         faults=(Fault("validateRequest", code="ChallengeDecryptionError"),)),
    Row("Challenge Authentication Failure - 2", expect=_FAILED, faults=(Fault("validateRequest", status=500),)),
    Row("Success Notification Failure", expect=_FAILED, validation_code="Success",
         faults=(Fault("successNotification", status=500),),
         note="the certificate is issued, not acknowledged, revoked and not delivered"),
    Row("Communication Failure", expect=_FAILED,
         faults=(Fault("token", auth_failure=True), Fault("validateRequest", auth_failure=True)),
         note="the matrix says the certificate is issued; we fail closed (intune-api.md §7)"),
)


def find_rows(selector: str) -> tuple[Row, ...]:
    """``all``, or one row by its name or slug (case-insensitive); ``KeyError`` if none matches."""
    if selector.strip().lower() == "all":
        return ROWS
    wanted = selector.strip().lower()
    for row in ROWS:
        if wanted in (row.name.lower(), row.slug):
            return (row,)
    raise KeyError(selector)
