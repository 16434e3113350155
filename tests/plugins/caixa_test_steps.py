"""Steps a third party could ship, used by the tests: found through the `caixa.steps` entry
points of the dist-info beside this file, exactly as an installed plugin is."""

from __future__ import annotations

import errno
import time
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from caixa.errors import StepError
from caixa.pipelines.base import (
    Artifact,
    BaseStep,
    Requirements,
    Resource,
    StepInput,
    StepResult,
)


class SleepyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = 0.1


class SleepyStep:
    """Holds the accelerator lane for a while, and says when it did. Written against the
    `Step` protocol alone, as a third party may."""

    name: ClassVar[str] = "sleepy"
    resource: ClassVar[Resource] = Resource.accelerator
    Params: ClassVar[type[BaseModel]] = SleepyParams
    requires: ClassVar[Requirements] = Requirements()

    def run(self, job: StepInput, params: SleepyParams) -> StepResult:
        start = time.time()
        time.sleep(params.seconds)
        out = job.workdir / "slept.txt"
        out.write_text(f"{job.source_name}\n")
        return StepResult(
            [Artifact(f"{job.stem}.slept.txt", out, "text/plain")],
            data={"start": start, "end": time.time()},
            models=["sleepy-model"],
        )


class FlakyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    busy_times: int = 0  # fail with EBUSY this many times (counted in `counter`)
    counter: str = ""
    needs: str = ""  # fail for good while this file does not exist


class FlakyStep(BaseStep):
    name: ClassVar[str] = "flaky"
    Params: ClassVar[type[BaseModel]] = FlakyParams

    def run(self, job: StepInput, params: FlakyParams) -> StepResult:
        if params.counter:
            counter = Path(params.counter) / job.source_name
            seen = int(counter.read_text()) if counter.exists() else 0
            counter.write_text(str(seen + 1))
            if seen < params.busy_times:
                raise OSError(errno.EBUSY, "device busy")
        if params.needs and not Path(params.needs).exists():
            raise StepError(f"{params.needs} is missing")
        return StepResult(data={"ok": True})


class NeedsMissing(BaseStep):
    """A step whose dependency is not installed: `check` must say so, not crash."""

    name: ClassVar[str] = "needs_missing"
    requires: ClassVar[Requirements] = Requirements(
        modules=("caixa_no_such_module",), executables=("caixa-no-such-tool",), extra="vision"
    )

    def run(self, job: StepInput, params: object) -> StepResult:
        raise AssertionError("never runs")
