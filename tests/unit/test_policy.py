"""The accelerator lane's order: few swaps under a backlog, nobody starved, priorities first."""

from __future__ import annotations

import pytest

from caixa.daemon.policy import ReadySet, Waiting


def serve(ready: ReadySet) -> tuple[list[Waiting], int]:
    """Take everything, as the lane would with one model resident at a time; count loads."""
    resident: set[str] = set()
    order, loads = [], 0
    while (item := ready.take(resident)) is not None:
        if item.model is not None and item.model not in resident:
            resident, loads = {item.model}, loads + 1
        order.append(item)
    return order, loads


def alternating(n: int = 60, models: tuple[str, ...] = ("a", "b", "c")) -> list[Waiting]:
    return [Waiting(f"job{i}", models[i % len(models)]) for i in range(n)]


@pytest.mark.parametrize("bound", [1, 2, 4, 8, 20, 60])
def test_a_backlog_over_three_models_swaps_at_most_once_per_bound(bound: int) -> None:
    ready = ReadySet(bound)
    for item in alternating():
        ready.add(item)
    order, loads = serve(ready)
    assert sorted(i.job_id for i in order) == sorted(f"job{i}" for i in range(60))
    assert loads <= 3 + 60 / bound


def test_bound_zero_is_first_come_first_served() -> None:
    ready = ReadySet(0)
    items = alternating()
    for item in items:
        ready.add(item)
    order, loads = serve(ready)
    assert order == items
    assert loads == 60


def test_a_step_of_another_model_waits_at_most_bound_steps() -> None:
    ready = ReadySet(4)
    ready.add(Waiting("first", "a"))
    assert ready.take(set()).job_id == "first"
    ready.add(Waiting("other", "b"))
    taken = []
    for i in range(10):  # the loaded model's work keeps coming
        ready.add(Waiting(f"a{i}", "a"))
        taken.append(ready.take({"a"}).job_id)
        if taken[-1] == "other":
            break
    assert taken == ["a0", "a1", "a2", "a3", "other"]


def test_higher_priority_goes_first_even_when_it_needs_a_swap() -> None:
    ready = ReadySet(8)
    ready.add(Waiting("bulk", "a"))
    ready.add(Waiting("urgent", "b", priority=5))
    ready.add(Waiting("bulk2", "a"))
    assert [ready.take({"a"}).job_id for _ in range(3)] == ["urgent", "bulk", "bulk2"]


def test_steps_without_a_model_go_between_swaps_and_never_count_as_one() -> None:
    ready = ReadySet(2)
    for item in [Waiting("x", None), Waiting("a1", "a"), Waiting("y", None), Waiting("b1", "b")]:
        ready.add(item)
    assert ready.by_model() == {"(no model)": 2, "a": 1, "b": 1}
    order, loads = serve(ready)
    assert [i.job_id for i in order] == ["x", "y", "a1", "b1"]
    assert loads == 2
    assert len(ready) == 0


def test_a_lane_leaves_a_model_another_lane_runs_to_it_and_loads_one_no_lane_runs() -> None:
    """Two lanes (a cluster's two nodes), both idle at first: the second does not load a
    second copy of the model the first is loading while other work waits."""
    ready = ReadySet(8)
    for item in [Waiting("a1", "a"), Waiting("a2", "a"), Waiting("b1", "b"), Waiting("a3", "a")]:
        ready.add(item)
    assert ready.take(set()).job_id == "a1"  # the first lane loads a
    assert ready.take(set(), running={"a"}).job_id == "b1"  # the second loads b
    assert ready.take({"a"}, elsewhere={"b"}).job_id == "a2"  # a's lane serves its own


def test_a_second_copy_is_loaded_only_for_a_backlog_longer_than_the_bound() -> None:
    ready = ReadySet(3)
    for i in range(3):
        ready.add(Waiting(f"a{i}", "a"))
    assert ready.take(set(), running={"a"}) is None  # the lane running a takes them
    assert len(ready) == 3
    ready.add(Waiting("a3", "a"))
    assert ready.take(set(), running={"a"}).job_id == "a0"  # 4 > 3: worth a second copy


def test_a_model_another_node_holds_waits_for_it_past_the_bound_but_never_for_ever() -> None:
    """The node holding b is busy with something else: this lane goes on with its own model
    past the bound (b's node takes b0 when free), and loads b itself once it has nothing else,
    rather than wait on a node that may stay busy."""
    ready = ReadySet(2)
    for item in [Waiting("b0", "b"), *(Waiting(f"a{i}", "a") for i in range(5))]:
        ready.add(item)
    taken = [ready.take({"a"}, elsewhere={"b"}) for _ in range(6)]
    assert [t.job_id for t in taken if t] == ["a0", "a1", "a2", "a3", "a4", "b0"]
