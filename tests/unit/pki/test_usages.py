"""Key usage and EKU names: the configuration's vocabulary, matching pyca/cryptography."""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from scep_server.pki.usages import (
    CERTIFICATE_REQUEST_AGENT,
    EKU_NAMES,
    IPSEC_TUNNEL,
    KEY_USAGE_NAMES,
    PKINIT_CLIENT_AUTH,
)


def test_key_usage_names_are_keyusage_attributes() -> None:
    usage = x509.KeyUsage(True, True, True, True, True, False, False, False, False)
    assert all(getattr(usage, name) is True for name in KEY_USAGE_NAMES)
    assert "key_cert_sign" not in KEY_USAGE_NAMES and "crl_sign" not in KEY_USAGE_NAMES


def test_eku_names_map_to_their_dotted_oids() -> None:
    assert EKU_NAMES["client_auth"] == ExtendedKeyUsageOID.CLIENT_AUTH.dotted_string == "1.3.6.1.5.5.7.3.2"
    assert EKU_NAMES["smartcard_logon"] == "1.3.6.1.4.1.311.20.2.2"
    assert EKU_NAMES["pkinit_kdc"] == ExtendedKeyUsageOID.KERBEROS_PKINIT_KDC.dotted_string
    assert EKU_NAMES["certificate_request_agent"] == CERTIFICATE_REQUEST_AGENT.dotted_string == "1.3.6.1.4.1.311.20.2.1"
    assert EKU_NAMES["pkinit_client_auth"] == PKINIT_CLIENT_AUTH.dotted_string == "1.3.6.1.5.2.3.4"
    assert EKU_NAMES["ipsec_tunnel"] == IPSEC_TUNNEL.dotted_string == "1.3.6.1.5.5.7.3.6"


def test_every_eku_name_is_a_distinct_valid_oid() -> None:
    oids = [x509.ObjectIdentifier(dotted) for dotted in EKU_NAMES.values()]
    assert len(set(oids)) == len(EKU_NAMES) == 14
