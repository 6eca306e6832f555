"""The gauges /metrics computes when it is scraped, from :mod:`scep_server.service.status`.

They describe state kept in the store or on disk, shared by every worker and replica, so they are read
when asked for rather than kept per process: Intune notifications waiting in the outbox and given up
on, deferred validations, the newest CRL's times and the OCSP responder certificate's. ``scep_store_up``
says whether the store answered; while it does not, the store's gauges are left out, not reported as 0.
"""

from __future__ import annotations

from datetime import datetime

from scep_server.config import ServerConfig
from scep_server.metrics import Reading
from scep_server.service.status import Status, StoreSnapshot, Validity

__all__ = ["GAUGES", "readings"]

GAUGES = {
    "scep_store_up": "1 when the store answered the status queries of this scrape, else 0",
    "scep_intune_outbox_pending": "Intune notifications stored and not delivered yet",
    "scep_intune_outbox_dead": "Intune notifications given up on after their retries",
    "scep_deferred_validations_pending": "PENDING transactions whose validation is retried in the background",
    "scep_crl_this_update_timestamp_seconds": "thisUpdate (Unix time) of the newest published CRL",
    "scep_crl_next_update_timestamp_seconds": "nextUpdate (Unix time) of the newest published CRL",
    "scep_crl_age_seconds": "Seconds since the thisUpdate of the newest published CRL",
    "scep_ocsp_responder_not_after_seconds": "Expiry (Unix time) of the OCSP responder certificate",
    "scep_ocsp_responder_age_seconds": "Seconds since the notBefore of the OCSP responder certificate "
    "(it is renewed at 2/3 of its lifetime)",
    "scep_intune_revocation_sync_interval_seconds": "How often Intune revocation requests are downloaded "
    "(present when Intune is configured)",
}


def readings(status: Status, config: ServerConfig) -> list[Reading]:
    """The gauges of ``status``, those that have a value."""
    values: dict[str, float] = {"scep_store_up": 0.0 if status.store is None else 1.0}
    if status.store is not None:
        values |= _store_values(status.store, status.taken_at)
    if status.ocsp_responder is not None:
        values |= _responder_values(status.ocsp_responder, status.taken_at)
    if config.intune.configured:
        values["scep_intune_revocation_sync_interval_seconds"] = float(config.intune.revocation_poll_seconds)
    return [Reading(name, GAUGES[name], value) for name, value in values.items()]


def _store_values(store: StoreSnapshot, now: datetime) -> dict[str, float]:
    values = {
        "scep_intune_outbox_pending": float(store.outbox_pending),
        "scep_intune_outbox_dead": float(store.outbox_dead),
        "scep_deferred_validations_pending": float(store.deferred),
    }
    if store.crl is not None:
        values["scep_crl_this_update_timestamp_seconds"] = store.crl.this_update.timestamp()
        values["scep_crl_next_update_timestamp_seconds"] = store.crl.next_update.timestamp()
        values["scep_crl_age_seconds"] = max(0.0, (now - store.crl.this_update).total_seconds())
    return values


def _responder_values(responder: Validity, now: datetime) -> dict[str, float]:
    return {
        "scep_ocsp_responder_not_after_seconds": responder.not_after.timestamp(),
        "scep_ocsp_responder_age_seconds": max(0.0, (now - responder.not_before).total_seconds()),
    }
