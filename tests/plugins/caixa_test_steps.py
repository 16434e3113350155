"""Steps a third party could ship, used by the tests: found through the `caixa.steps` entry
points of the dist-info beside this file, exactly as an installed plugin is."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import ClassVar

import psutil
from pydantic import BaseModel, ConfigDict

from caixa import models
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
    until: str = ""  # then hold on until this file exists: the test says when to let go
    progress: float | None = None  # say this much is done before holding on


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
        if params.progress is not None:
            job.progress(params.progress)
        while params.until and not Path(params.until).exists():
            time.sleep(0.02)
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


class WeightsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = "alpha"
    megabytes: int = 8  # what its model holds in memory once loaded
    load_seconds: float = 0.05  # what loading it costs
    seconds: float = 0.01  # what each use costs


class WeightsStep(BaseStep):
    """An accelerator step with a model of its own, loaded through caixa's model cache: the
    load takes real memory and time, as a real model's does, and the step says whether this
    run had to load it."""

    name: ClassVar[str] = "weights"
    resource: ClassVar[Resource] = Resource.accelerator
    Params: ClassVar[type[BaseModel]] = WeightsParams

    @classmethod
    def model_of(cls, params: WeightsParams) -> str:
        return params.model

    @classmethod
    def lighter(cls, params: WeightsParams) -> WeightsParams:
        """Settings that need less memory, for a retry after running out of it."""
        return params.model_copy(update={"megabytes": 1})

    def run(self, job: StepInput, params: WeightsParams) -> StepResult:
        start = time.time()
        loads: list[float] = []

        def load() -> bytearray:
            time.sleep(params.load_seconds)
            loads.append(time.time())
            return bytearray(b"\x01") * (params.megabytes * 2**20)  # written, so resident

        weights = models.load(f"weights:{params.model}:{params.megabytes}", load)
        time.sleep(params.seconds)
        out = job.workdir / "used.txt"
        out.write_text(f"{params.model} {len(weights)}\n")
        return StepResult(
            [Artifact(f"{job.stem}.used.txt", out, "text/plain")],
            data={
                "start": start,
                "end": time.time(),
                "loaded": bool(loads),
                "pid": os.getpid(),
                "rss": psutil.Process().memory_info().rss,  # with the weights held
            },
            models=[params.model],
        )


class HoldParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    started: str  # written as the step starts: the test knows CPU work is running
    until: str  # then it holds the CPU lane until this file exists


class HoldStep(BaseStep):
    """CPU work that runs until the test lets it go, so that a test can start an accelerator
    step while the CPU lane is busy, without guessing how long anything takes."""

    name: ClassVar[str] = "hold"
    Params: ClassVar[type[BaseModel]] = HoldParams

    def run(self, job: StepInput, params: HoldParams) -> StepResult:
        Path(params.started).write_text(job.source_name)
        while not Path(params.until).exists():
            time.sleep(0.02)
        return StepResult(data={"held": True})
