"""Issuing: CA/RA keys and certificates, the certificate builder policy, serials, CRLs."""
