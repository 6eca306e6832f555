"""What a CA rollover (RFC 8894 §3.5.2) shows clients before it happens: GetNextCACert (§4.7).

Once ``ca rollover stage`` has put the next CA in place, GetCACaps advertises ``GetNextCACert`` and the
answer carries the next RA, the next CA (with its chain, and the certificate by which the active CA
cross-signed it, if any), signed by the active CA key and the active RA key: a client trusting either
(both came with GetCACert) can verify it. After activation nothing is staged and GetCACaps stops
advertising it.

Anyone may ask for GetNextCACert, and each answer costs two signatures (on a token, two round trips to
it), so an answer is kept for :data:`REPLY_TTL_SECONDS` and made again only when that time is up or one
of the certificates it is made of changed (a new staged CA, an RA rotation, an activation).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from scep_server.ca.generations import Generation, Generations, cross_signed
from scep_server.scep.nextca import NextCaSigner, build_next_ca_response

__all__ = ["REPLY_TTL_SECONDS", "NextCaReplies", "next_ca_response", "next_ca_staged"]

REPLY_TTL_SECONDS = 300.0
# The staged CA's and RA's, then the active CA's and RA's certificate fingerprints, and include_root.
ReplyKey = tuple[bytes, bytes, bytes, bytes, bool]


class NextCaReplies:
    """GetNextCACert answers, each kept ``ttl`` seconds by what it was made of; safe across threads."""

    def __init__(self, ttl: float = REPLY_TTL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._replies: dict[ReplyKey, tuple[float, bytes]] = {}

    def get(self, key: ReplyKey, build: Callable[[], bytes]) -> bytes:
        """The answer kept for ``key``, or the one ``build`` makes now (while others wait for it)."""
        with self._lock:
            now = self._clock()
            kept = self._replies.get(key)
            if kept is not None and now < kept[0]:
                return kept[1]
            reply = build()
            self._replies = {k: v for k, v in self._replies.items() if now < v[0]}  # drop the stale ones
            self._replies[key] = (now + self._ttl, reply)
            return reply


_REPLIES = NextCaReplies()  # one per process: every worker thread shares it


def next_ca_staged(generations: Generations) -> bool:
    return generations.next is not None


def next_ca_response(
    generations: Generations, *, include_root: bool, replies: NextCaReplies | None = None
) -> bytes | None:
    """The GetNextCACert answer, or None when no next CA is staged; ``replies``: where answers are kept
    (the process's by default)."""
    staged = generations.next
    if staged is None:
        return None
    active = generations.active.ca
    key = (_fingerprint(staged.ca.ca_cert), _fingerprint(staged.ca.ra_cert),
           _fingerprint(active.ca_cert), _fingerprint(active.ra_cert), include_root)
    kept = replies if replies is not None else _REPLIES
    return kept.get(key, lambda: _build(staged, generations.active, include_root=include_root))


def _build(staged: Generation, issuing: Generation, *, include_root: bool) -> bytes:
    certificates = staged.ca.getcacert_certificates(include_root)
    cross = cross_signed(staged.directory)
    if cross is not None:
        certificates.append(cross)
    active = issuing.ca
    signers = [NextCaSigner(active.ca_cert, active.ca_key), NextCaSigner(active.ra_cert, active.ra_key)]
    return build_next_ca_response(certificates, signers)


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())
