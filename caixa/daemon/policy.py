"""The order in which waiting accelerator steps get the lane: few model swaps, none starved.

Loading a model is the slow part of a small GPU's work (seconds for a diffusion model or an
LLM, against tenths of a second for one image), so the lane keeps serving the model it has
loaded while such work waits. The bound keeps that from starving anyone: once the oldest
waiting step has seen `bound` other steps start since the lane last changed model, it goes
next, whatever its model. Counting from the last change (not from its arrival) matters under a
backlog: everything there has waited long, and counting from arrival would make every pick a
swap again. So a full backlog is served in runs of `bound` steps per model: at most one swap
per `bound` steps, plus one per model. Rule priorities come before all of this.

A step that can run several jobs at once (`run_batch`) takes along the other waiting jobs of
the same step and params (so the same model), up to BATCH; each counts as a pick, so the bound
still holds within one batch's size.

On a Ray cluster there is a lane per node, all taking from one ready set. A lane sees the models
on the idle nodes (less those another lane's step is going to), the models the other nodes hold
and those the other lanes run now: a step whose model another node holds is left to that node,
the idle node loads a model no node holds, and a second copy of a model is loaded only for a
backlog longer than the bound. So two nodes split three models between them instead of each
loading all three.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

BATCH = 8  # most jobs in one batch: a longer one would hold the lane too long


@dataclass(frozen=True)
class Waiting:
    """A job whose next step needs the accelerator."""

    job_id: str
    model: str | None  # what the step would load (`model_of`); None: no model to swap
    priority: int = 0  # the rule's; higher goes first
    batch: str | None = None  # jobs with the same key may run as one batch; None: alone


@dataclass
class _Entry:
    item: Waiting
    seq: int  # arrival order
    arrived: int  # the lane's pick count when it arrived


@dataclass
class ReadySet:
    """Waiting accelerator steps and the policy that picks the next. Not thread-safe: the
    scheduler holds its lock around every call. `bound` 0 is first come, first served."""

    bound: int
    _entries: list[_Entry] = field(default_factory=list)
    _seq: int = 0
    _picks: int = 0
    _changed_at: int = 0  # the pick count when the lane last changed model

    def add(self, item: Waiting) -> None:
        self._entries.append(_Entry(item, self._seq, self._picks))
        self._seq += 1

    def take(
        self,
        resident: Collection[str],
        elsewhere: Collection[str] = (),
        running: Collection[str] = (),
    ) -> Waiting | None:
        """The next step to run, given the models the worker about to run it holds now, and
        (several lanes: a cluster's nodes) the models the other workers hold, and those the
        other lanes are running; None: nothing to run now (the caller waits for a step to
        arrive or a lane to finish). The oldest step whose model another worker holds is
        left to it (it fits there): this lane serves its own model meanwhile, or loads one
        that no worker holds, and loads a second copy only for a backlog longer than the
        bound or of a model that no lane is running now (its worker may be busy for long)."""
        if not self._entries:
            return None
        top = max(e.item.priority for e in self._entries)
        ranked = [e for e in self._entries if e.item.priority == top]  # oldest first
        head = ranked[0]
        chosen = head
        if not _fits(head.item, resident):
            same = next((e for e in ranked if _fits(e.item, resident)), None)
            waited = self._picks - max(head.arrived, self._changed_at)
            others = {*elsewhere, *running}
            held = head.item.model in others
            if same is not None and (waited < self.bound or held):
                chosen = same
            elif held:
                unheld = next((e for e in ranked if e.item.model not in others), None)
                backlog = sum(e.item.model == head.item.model for e in ranked)
                if unheld is None and head.item.model in running and backlog <= self.bound:
                    return None
                chosen = unheld or head
        if not _fits(chosen.item, resident):
            self._changed_at = self._picks
        self._picks += 1
        self._entries.remove(chosen)
        return chosen.item

    def take_like(self, first: Waiting, limit: int = BATCH - 1) -> list[Waiting]:
        """The oldest waiting jobs that may run in one batch with `first` (same key, same
        priority), up to `limit`; each counts as a pick."""
        if first.batch is None:
            return []
        found = [
            e
            for e in self._entries
            if e.item.batch == first.batch and e.item.priority == first.priority
        ][:limit]
        for e in found:
            self._entries.remove(e)
        self._picks += len(found)
        return [e.item for e in found]

    def by_model(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self._entries:
            key = e.item.model or "(no model)"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def __len__(self) -> int:
        return len(self._entries)


def _fits(item: Waiting, resident: Collection[str]) -> bool:
    """Whether the step runs without loading another model."""
    return item.model is None or item.model in resident
