"""GetNextCACert answers are kept: anyone may ask, and each answer costs a signature by the CA key and
one by the RA key (on a token, round trips to it). One is made again only when its time is up or a
certificate it is made of changed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from scep_server.ca.authority import CertificateAuthority, init_ca
from scep_server.ca.generations import Generation, Generations
from scep_server.config import CAConfig
from scep_server.scep.client.nextca import read_next_ca
from scep_server.scep.nextca import NextCaSigner, build_next_ca_response
from scep_server.service import rollover
from scep_server.service.rollover import REPLY_TTL_SECONDS, NextCaReplies, next_ca_response
from tests.support.clocks import FakeClock


@pytest.fixture(scope="module")
def next_cas(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertificateAuthority, CertificateAuthority]:
    """Two CAs either of which can be the one a rollover stages."""
    root = tmp_path_factory.mktemp("next")
    return tuple(  # type: ignore[return-value]
        init_ca(root / name, CAConfig(name=name, subject=f"CN=Next CA {name}", key_size=2048), None)
        for name in ("g2", "g3")
    )


@pytest.fixture
def generations(ca: CertificateAuthority, next_cas: tuple[CertificateAuthority, ...], tmp_path: Path) -> Generations:
    return Generations(Generation(ca, tmp_path / "active"), Generation(next_cas[0], tmp_path / "next"))


class CountingBuild:
    """build_next_ca_response, counting the replies made and the signatures asked of the keys."""

    def __init__(self, build: Callable[..., bytes]) -> None:
        self._build = build
        self.replies = 0
        self.signatures = 0

    def __call__(self, certificates: Sequence[object], signers: Sequence[NextCaSigner], **kwargs: object) -> bytes:
        self.replies += 1
        self.signatures += len(signers)
        return self._build(certificates, signers, **kwargs)


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> CountingBuild:
    counting = CountingBuild(build_next_ca_response)
    monkeypatch.setattr(rollover, "build_next_ca_response", counting)
    return counting


@pytest.fixture
def clock() -> FakeClock[float]:
    return FakeClock(1000.0)


def test_an_answer_is_made_once_within_its_time(
    generations: Generations, builds: CountingBuild, clock: FakeClock[float], ca: CertificateAuthority
) -> None:
    replies = NextCaReplies(clock=clock)
    first = next_ca_response(generations, include_root=False, replies=replies)
    clock.advance(REPLY_TTL_SECONDS - 1)
    assert next_ca_response(generations, include_root=False, replies=replies) == first
    assert (builds.replies, builds.signatures) == (1, 2)  # the CA key and the RA key, once
    assert first is not None and generations.next is not None
    assert read_next_ca(first, [ca.ca_cert]).ca == generations.next.ca.ca_cert


def test_an_answer_is_made_again_once_its_time_is_up(
    generations: Generations, builds: CountingBuild, clock: FakeClock[float]
) -> None:
    replies = NextCaReplies(clock=clock)
    next_ca_response(generations, include_root=False, replies=replies)
    clock.advance(REPLY_TTL_SECONDS)
    next_ca_response(generations, include_root=False, replies=replies)
    assert builds.replies == 2


def test_an_answer_is_made_again_when_what_it_holds_changes(
    generations: Generations, builds: CountingBuild, clock: FakeClock[float],
    next_cas: tuple[CertificateAuthority, ...], ca: CertificateAuthority, tmp_path: Path,
) -> None:
    replies = NextCaReplies(clock=clock)
    first = next_ca_response(generations, include_root=False, replies=replies)
    assert next_ca_response(generations, include_root=True, replies=replies) is not None
    assert builds.replies == 2, "with and without the root: two answers"

    restaged = replace(generations, next=Generation(next_cas[1], tmp_path / "next"))  # another CA staged
    other = next_ca_response(restaged, include_root=False, replies=replies)
    assert other is not None and other != first and builds.replies == 3
    assert read_next_ca(other, [ca.ca_cert]).ca == next_cas[1].ca_cert

    # the active generation changed: another key signs
    switched = Generations(Generation(next_cas[1], tmp_path / "a"), Generation(next_cas[0], tmp_path / "n"))
    next_ca_response(switched, include_root=False, replies=replies)
    assert builds.replies == 4
    assert next_ca_response(generations, include_root=False, replies=replies) == first and builds.replies == 4


def test_nothing_is_kept_while_nothing_is_staged(
    builds: CountingBuild, ca: CertificateAuthority, tmp_path: Path
) -> None:
    assert next_ca_response(Generations.single(ca, tmp_path), include_root=False) is None
    assert builds.replies == 0


def test_the_process_keeps_one_answer_for_every_thread(
    generations: Generations, builds: CountingBuild, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollover, "_REPLIES", NextCaReplies())  # the process's, as it starts
    answers: list[bytes | None] = []
    start = threading.Barrier(8)

    def ask() -> None:
        start.wait()
        answers.append(next_ca_response(generations, include_root=False))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert builds.replies == 1 and len(answers) == 8 and len(set(answers)) == 1


def test_a_failed_build_is_not_kept(clock: FakeClock[float]) -> None:
    replies = NextCaReplies(clock=clock)
    key = (b"s", b"r", b"a", b"b", False)

    def fails() -> bytes:
        raise ValueError("no signer")

    with pytest.raises(ValueError, match="no signer"):
        replies.get(key, fails)
    assert replies.get(key, lambda: b"made") == b"made"
    assert replies.get(key, lambda: b"again") == b"made"
