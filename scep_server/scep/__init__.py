"""SCEP protocol (RFC 8894): pure functions over bytes and x509 objects; no I/O, no Flask, no DB."""
