"""A short run of every fuzz target (fuzz/targets.py) on random bytes and on mutated seeds.

The property is the targets' own: only the documented outcomes come out, within a time bound. Findings
already pinned in test_fuzz_findings are let through (see known.py). The long campaign is
``python -m fuzz.run`` (fuzz/README.md).
"""

from __future__ import annotations

import time
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz import messages, run, seeds, targets
from fuzz.targets import ACCEPTED, UNREADABLE

from .known import is_known

SMOKE = settings(
    max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
TIME_BOUND = 10.0  # seconds for one input: decoding a few kilobytes takes milliseconds
INTERESTING = (0x00, 0x01, 0x7F, 0x80, 0x81, 0xFF)


@cache
def _seeds(name: str) -> tuple[bytes, ...]:
    return tuple(seeds.SEEDS[name]())


def exercise(name: str, data: bytes) -> str:
    """Run one input; the outcome label, or "known" for a finding that is pinned already."""
    started = time.perf_counter()
    try:
        outcome = targets.TARGETS[name](data)
    except Exception as exc:
        if not is_known(exc):
            raise
        outcome = "known"
    elapsed = time.perf_counter() - started
    assert elapsed < TIME_BOUND, f"{name} took {elapsed:.1f} s on {len(data)} bytes: {data.hex()}"
    return outcome


@st.composite
def mutations(draw: st.DrawFn, name: str) -> bytes:
    """A seed of ``name`` after 1 to 8 byte-level edits (overwrite, insert, delete, duplicate, truncate)."""
    data = bytearray(draw(st.sampled_from(_seeds(name))))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        edit = draw(st.sampled_from(["byte", "interesting", "insert", "delete", "duplicate", "truncate"]))
        if edit == "byte" and data:
            data[at] = draw(st.integers(0, 255))
        elif edit == "interesting" and data:
            data[at] = draw(st.sampled_from(INTERESTING))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif edit == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif edit == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        else:
            del data[at:]
    return bytes(data)


@pytest.mark.parametrize("name", list(targets.TARGETS))
@SMOKE
@given(data=st.data())
def test_random_bytes(name: str, data: st.DataObject) -> None:
    exercise(name, data.draw(st.binary(max_size=2048)))


@pytest.mark.parametrize("name", list(targets.TARGETS))
@SMOKE
@given(data=st.data())
def test_mutated_seeds(name: str, data: st.DataObject) -> None:
    exercise(name, data.draw(mutations(name)))


# --- the targets reach the code they are meant for ------------------------------------------------


def outcomes(name: str) -> Counter[str]:
    return Counter(exercise(name, seed) for seed in _seeds(name))


def test_raw_seeds_include_accepted_requests_and_the_public_vectors() -> None:
    counted = outcomes("envelope_raw")
    assert counted[ACCEPTED] >= len(messages.REQUEST_KINDS)
    assert counted[UNREADABLE] >= 1 and counted["BadTime"] >= 1  # vectors: CertReps without nonce, old ones


def test_every_kind_of_content_inside_a_genuine_envelope_is_accepted() -> None:
    assert outcomes("envelope_content") == Counter({ACCEPTED: len(_seeds("envelope_content"))})


def test_genuine_envelopes_are_accepted_and_foreign_ones_rejected_with_a_cert_rep() -> None:
    counted = outcomes("envelope_pkcs")
    assert counted[ACCEPTED] >= 4 and counted[UNREADABLE] == 0
    assert sum(counted.values()) - counted[ACCEPTED] >= 1  # the vectors' envelopes, to other recipients


def test_genuine_signed_attributes_are_accepted() -> None:
    assert outcomes("envelope_attributes")[ACCEPTED] >= 3


def test_ocsp_seeds_are_answered_and_another_issuer_is_refused() -> None:
    counted = outcomes("ocsp_request")
    assert counted["SUCCESSFUL"] >= 12 and counted["UNAUTHORIZED"] == 1


def test_a_request_refused_by_read_envelope_is_unreadable() -> None:
    assert exercise("envelope_raw", b"") == UNREADABLE
    assert exercise("envelope_raw", b"\x30\x00") == UNREADABLE


def test_an_envelope_refused_without_cert_rep_violates_the_property(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(targets, "_decode", lambda der, options: UNREADABLE)
    with pytest.raises(targets.PropertyViolation):
        targets.envelope_pkcs(b"\x30\x00")


# --- the runner ------------------------------------------------------------------------------------


def test_the_runner_offers_every_target() -> None:
    assert run._target_names() == list(targets.TARGETS)


def test_keep_going_records_each_distinct_finding_once(tmp_path: Path) -> None:
    def target(data: bytes) -> str:
        if data == b"boom":
            raise KeyError("boom")
        return ACCEPTED

    findings = run.Findings(tmp_path, slow=60.0)
    guarded = findings.guard(target)
    assert [guarded(b"ok"), guarded(b"boom"), guarded(b"boom")] == [ACCEPTED, "finding", "finding"]
    (written,) = tmp_path.glob("*.bin")
    assert written.read_bytes() == b"boom"
    assert "KeyError" in written.with_suffix(".txt").read_text()
    assert [count for signature, count in findings.counts.items() if signature.startswith("KeyError@")] == [2]
    assert "KeyError@" in (tmp_path / "summary.txt").read_text()


def test_keep_going_keeps_slow_inputs(tmp_path: Path) -> None:
    guarded = run.Findings(tmp_path, slow=0.0).guard(lambda data: ACCEPTED)
    assert guarded(b"slow") == ACCEPTED
    assert [path.read_bytes() for path in tmp_path.glob("*.bin")] == [b"slow"]


def test_seeds_are_written_under_their_digest(tmp_path: Path) -> None:
    count = seeds.write("ocsp_request", tmp_path)
    assert count == len(list(tmp_path.iterdir())) and count >= 16
