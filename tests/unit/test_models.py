"""Model residency in one process: what a step loads belongs to its model, models leave by
least recent use when a new one would not fit the budget, and unloading really drops them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from caixa import models


@pytest.fixture(autouse=True)
def empty() -> Iterator[None]:
    models.unload()
    yield
    models.unload()


def weights(folder: Path, name: str, megabytes: int) -> str:
    """A model given by path, as a user gives one: its files' size is its footprint."""
    path = folder / f"{name}.bin"
    path.write_bytes(b"\0" * (megabytes * 2**20))
    return str(path)


def use(model: str | None, key: str) -> str:
    with models.serving(model):
        return models.load(key, lambda: f"loaded {key}")


def held() -> list[str]:
    return [r.name for r in models.resident()]


def test_what_a_step_loads_belongs_to_its_model_and_unloads_with_it() -> None:
    calls = []
    with models.serving("detector"):
        models.load("detector:weights", lambda: calls.append(1) or "w")
        models.load("detector:labels", lambda: calls.append(1) or "l")
    (resident,) = models.resident()
    assert (resident.name, resident.keys, resident.declared) == (
        "detector",
        ["detector:weights", "detector:labels"],
        True,
    )
    assert models.unload(["detector"]) == ["detector"]
    assert held() == []
    with models.serving("detector"):
        models.load("detector:weights", lambda: calls.append(1) or "w")
    assert len(calls) == 3  # loaded again after the unload


def test_the_least_recently_used_model_leaves_when_a_new_one_does_not_fit(tmp_path: Path) -> None:
    a, b, c = (weights(tmp_path, n, 2) for n in "abc")
    budget = 5 * 2**20  # two of them fit
    for model in (a, b):
        assert models.make_room(model, budget) == []
        use(model, model)
    use(a, a)  # a is now the most recently used
    assert models.make_room(c, budget) == [b]
    use(c, c)
    assert sorted(held()) == sorted([a, c])
    assert models.make_room(a, budget) == []  # already here: nothing to do


def test_a_model_of_unknown_size_is_given_the_whole_budget(tmp_path: Path) -> None:
    known = weights(tmp_path, "known", 1)
    use(known, known)
    use(None, "language-detector")  # loaded without a declared model: keep-alive only
    assert models.make_room("a-name-with-no-files", 100 * 2**20) == [known]
    assert held() == ["language-detector"]


def test_a_packaged_model_is_as_big_as_its_files() -> None:
    path = models.locate("fall-detection")
    assert models.footprint("fall-detection") == path.stat().st_size > 1_000_000
    assert models.footprint("no-such-model") is None
