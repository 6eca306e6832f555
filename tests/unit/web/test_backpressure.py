"""OperationSlots: a capped profile admits at most its cap at once, never blocks, and frees a slot on the way out."""

from __future__ import annotations

import threading

import pytest

from scep_server.config import ProfileConfig, ServerConfig
from scep_server.web.backpressure import OperationSlots


def test_a_capped_profile_admits_its_cap_and_refuses_the_next_at_once() -> None:
    slots = OperationSlots({"intune": 2})
    with slots.slot("intune") as first, slots.slot("intune") as second, slots.slot("intune") as third:
        assert (first, second, third) == (True, True, False)
    with slots.slot("intune") as again:
        assert again


def test_a_slot_is_freed_when_the_operation_fails() -> None:
    slots = OperationSlots({"intune": 1})
    with pytest.raises(RuntimeError), slots.slot("intune") as admitted:
        assert admitted
        raise RuntimeError("the operation failed")
    with slots.slot("intune") as admitted:
        assert admitted


def test_profiles_without_a_cap_are_never_refused() -> None:
    slots = OperationSlots({"open": 0, "capped": 1})
    with slots.slot("capped") as capped, slots.slot("open") as first, slots.slot("open") as second, \
            slots.slot("unknown") as unknown:
        assert (capped, first, second, unknown) == (True, True, True, True)
    assert (slots.cap("open"), slots.cap("capped"), slots.cap("unknown")) == (None, 1, None)


def test_the_caps_come_from_the_profiles() -> None:
    config = ServerConfig(profiles=(ProfileConfig(name="a", max_concurrent_operations=3), ProfileConfig(name="b")))
    slots = OperationSlots.from_config(config)
    assert (slots.cap("a"), slots.cap("b")) == (3, None)


def test_the_cap_holds_across_threads() -> None:
    slots = OperationSlots({"p": 3})
    inside = threading.Barrier(4, timeout=5)  # three admitted threads and this one
    release = threading.Event()
    admitted: list[bool] = []

    def operation() -> None:
        with slots.slot("p") as ok:
            admitted.append(ok)
            if ok:
                inside.wait()
                release.wait(5)

    threads = [threading.Thread(target=operation) for _ in range(3)]
    for thread in threads:
        thread.start()
    inside.wait()
    operation()  # while the three hold their slots, here: refused, without waiting
    operation()
    assert admitted.count(False) == 2
    release.set()
    for thread in threads:
        thread.join(5)
    assert admitted.count(True) == 3
