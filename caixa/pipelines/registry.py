"""Steps found through the `caixa.steps` entry points, so a third party can add one."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from pydantic import BaseModel

from caixa.pipelines.base import Step

GROUP = "caixa.steps"


class StepUnavailableError(LookupError):
    """The rules name a step that is not installed, or whose dependencies are missing."""


@dataclass(frozen=True)
class Availability:
    name: str
    step: type[Step] | None
    reason: str | None  # why it cannot run, when step is None


class StepRegistry:
    def __init__(self, points: list[EntryPoint] | None = None) -> None:
        found = points if points is not None else list(entry_points(group=GROUP))
        self._points = {p.name: p for p in found}
        self._cache: dict[str, Availability] = {}

    def names(self) -> list[str]:
        return sorted(self._points)

    def availability(self, name: str) -> Availability:
        if name not in self._cache:
            self._cache[name] = self._probe(name)
        return self._cache[name]

    def get(self, name: str) -> type[Step]:
        found = self.availability(name)
        if found.step is None:
            raise StepUnavailableError(f"step {name!r} is unavailable: {found.reason}")
        return found.step

    def params_model(self, name: str) -> type[BaseModel]:
        return self.get(name).Params

    def _probe(self, name: str) -> Availability:
        point = self._points.get(name)
        if point is None:
            known = ", ".join(self.names()) or "none"
            return Availability(name, None, f"no step named {name!r} is installed (known: {known})")
        try:
            step = point.load()
        except Exception as exc:  # a broken plugin must not take the daemon down
            return Availability(name, None, f"{point.value} does not load: {exc}")
        missing = step.requires.missing()
        if missing:
            return Availability(name, None, "missing " + "; ".join(missing))
        return Availability(name, step, None)


@cache
def default_registry() -> StepRegistry:
    return StepRegistry()
