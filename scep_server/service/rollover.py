"""What a CA rollover (RFC 8894 §3.5.2) shows clients before it happens: GetNextCACert (§4.7).

Once ``ca rollover stage`` has put the next CA in place, GetCACaps advertises ``GetNextCACert`` and the
answer carries the next RA, the next CA (with its chain, and the certificate by which the active CA
cross-signed it, if any), signed by the active CA key and the active RA key: a client trusting either
(both came with GetCACert) can verify it. After activation nothing is staged and GetCACaps stops
advertising it.
"""

from __future__ import annotations

from scep_server.ca.generations import Generations, cross_signed
from scep_server.scep.nextca import NextCaSigner, build_next_ca_response


def next_ca_staged(generations: Generations) -> bool:
    return generations.next is not None


def next_ca_response(generations: Generations, *, include_root: bool) -> bytes | None:
    """The GetNextCACert answer, or None when no next CA is staged."""
    staged = generations.next
    if staged is None:
        return None
    certificates = staged.ca.getcacert_certificates(include_root)
    cross = cross_signed(staged.directory)
    if cross is not None:
        certificates.append(cross)
    active = generations.active.ca
    signers = [NextCaSigner(active.ca_cert, active.ca_key), NextCaSigner(active.ra_cert, active.ra_key)]
    return build_next_ca_response(certificates, signers)
