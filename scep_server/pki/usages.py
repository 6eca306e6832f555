"""Key usages and extended key usages by the names configuration and challenges use (RFC 5280 §4.2.1.3,
§4.2.1.12).

Key usage names are the attribute names of :class:`cryptography.x509.KeyUsage`; only the end-entity ones
are listed (keyCertSign and cRLSign make a CA, encipherOnly and decipherOnly are never asked for alone).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

__all__ = [
    "CERTIFICATE_REQUEST_AGENT",
    "EKU_NAMES",
    "IPSEC_END_SYSTEM",
    "IPSEC_TUNNEL",
    "IPSEC_USER",
    "KEY_USAGE_NAMES",
    "PKINIT_CLIENT_AUTH",
]

KEY_USAGE_NAMES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
)

# Not in ExtendedKeyUsageOID: Microsoft's enrollment agent, the PKINIT client (RFC 4556 §3.2.2) and the
# IPsec usages RFC 4945 §5.1.3.12 deprecates but deployed VPN clients still ask for.
CERTIFICATE_REQUEST_AGENT = x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.1")
PKINIT_CLIENT_AUTH = x509.ObjectIdentifier("1.3.6.1.5.2.3.4")
IPSEC_END_SYSTEM = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.5")
IPSEC_TUNNEL = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.6")
IPSEC_USER = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.7")

_EKU_OIDS: dict[str, x509.ObjectIdentifier] = {
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "ipsec_ike": ExtendedKeyUsageOID.IPSEC_IKE,
    "ipsec_tunnel": IPSEC_TUNNEL,
    "ipsec_user": IPSEC_USER,
    "ipsec_end_system": IPSEC_END_SYSTEM,
    "smartcard_logon": ExtendedKeyUsageOID.SMARTCARD_LOGON,
    "any_extended_key_usage": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    "certificate_request_agent": CERTIFICATE_REQUEST_AGENT,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "pkinit_client_auth": PKINIT_CLIENT_AUTH,
    "pkinit_kdc": ExtendedKeyUsageOID.KERBEROS_PKINIT_KDC,
}
# Configuration name -> dotted OID.
EKU_NAMES: dict[str, str] = {name: oid.dotted_string for name, oid in _EKU_OIDS.items()}

