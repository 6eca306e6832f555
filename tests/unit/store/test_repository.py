"""The composed ``Store``: it offers every method of its repositories, with their signatures, and hands
each call to its piece with every argument."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from scep_server.store import Store
from scep_server.store.base import Repository


def _pieces(store: Store) -> dict[str, Repository]:
    return {name: value for name, value in vars(store).items() if isinstance(value, Repository)}


def _public_methods(piece: Repository) -> list[str]:
    return [
        name for name, value in inspect.getmembers(type(piece), inspect.isfunction)
        if not name.startswith("_") and value.__qualname__.split(".")[0] != "Repository"
    ]


def _delegations() -> list[tuple[str, str]]:
    store = Store.open("sqlite://")
    try:
        return [(piece, method) for piece, value in _pieces(store).items() for method in _public_methods(value)]
    finally:
        store.close()


DELEGATIONS = _delegations()


def test_the_store_is_composed_of_its_repositories() -> None:
    assert {piece for piece, _ in DELEGATIONS} >= {
        "schema", "transactions", "deferred", "deliveries", "certificates", "revocations", "audit", "outbox",
        "intune_revocations",
    }
    methods = [method for _, method in DELEGATIONS]
    assert len(methods) == len(set(methods)), "two pieces offer a method of the same name"


@pytest.mark.parametrize(("piece", "method"), DELEGATIONS, ids=[method for _, method in DELEGATIONS])
def test_the_store_offers_the_method_with_its_signature(piece: str, method: str) -> None:
    with Store.open("sqlite://") as store:
        offered = inspect.signature(getattr(store, method))
        original = inspect.signature(getattr(getattr(store, piece), method))
    assert offered == original


@pytest.mark.parametrize(("piece", "method"), DELEGATIONS, ids=[method for _, method in DELEGATIONS])
def test_the_store_hands_every_argument_to_its_piece(
    piece: str, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    result = object()

    def record(*args: Any, **kwargs: Any) -> object:
        calls.append((args, kwargs))
        return result

    with Store.open("sqlite://") as store:
        target = getattr(store, piece)
        signature = inspect.signature(getattr(target, method))
        monkeypatch.setattr(target, method, record)
        arguments = {name: object() for name in signature.parameters}
        positional = [arguments[p.name] for p in signature.parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        keywords = {p.name: arguments[p.name] for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY}
        returned = getattr(store, method)(*positional, **keywords)
    (args, kwargs), = calls
    assert signature.bind(*args, **kwargs).arguments == arguments
    if signature.return_annotation not in ("None", None):
        assert returned is result
