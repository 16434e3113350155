"""What the daemon and a worker process say to each other, as plain picklable data.

A WorkerConfig first, answered by a Hello; then Task, Batch, Preload and Unload requests, each
answered by a Reply (a Batch's holds one Reply per task, in order), which a long step's Progress
messages may precede. A step's exception crosses as a Failure, classified once, here, for both sides.
"""

from __future__ import annotations

import errno
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from caixa import models
from caixa.errors import StepError, is_no_room, is_transient
from caixa.pipelines.base import StepInput, StepResult
from caixa.pipelines.registry import StepUnavailableError

THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass(frozen=True)
class WorkerConfig:
    lane: str  # "accelerator" or "cpu"
    device: str  # auto | cpu | cuda | cuda:N
    threads: int  # CPU threads its libraries may use: the lane's share while CPU steps run
    pin: bool  # on the CPU, keep it to `threads` cores, so the CPU lanes keep the rest
    model_memory: int  # bytes its models may take; 0: detect
    log: dict[str, Any]  # log.configure's arguments: the daemon's own
    sys_path: list[str]


@dataclass(frozen=True)
class Hello:
    pid: int
    device: str
    model_memory: int
    error: str | None = None  # why it cannot run steps (a device asked for that is not there)


@dataclass(frozen=True)
class Task:
    """One step of one job, as plain data."""

    step: str
    params: dict[str, Any]
    job: StepInput
    model: str | None  # the step's `model_of`, for residency
    timeout: float | None = None  # the rule's limit in seconds; None: the settings' default
    cpu_fallback: bool = False  # the rule allows the CPU when the GPU runs out of memory
    cluster: bool = False  # the rule sends its CPU steps to an idle Ray node when there is one
    # the threads the lane gives this step, asked when its worker takes it (`with_threads`):
    # every core while no CPU step runs or waits; None: the worker's share (WorkerConfig.threads)
    threads: int | None = None

    @property
    def context(self) -> dict[str, str]:
        return {"job": self.job.job_id, "rule": self.job.rule, "step": self.step}


@dataclass(frozen=True)
class Batch:
    """Steps of several jobs with the same step and params (so the same model), for the
    step's `run_batch`: one model call for all of them."""

    tasks: tuple[Task, ...]


# The lane's thread count for a step, asked when a worker takes it (Task.threads), not when
# the lane picks it: a worker that starts first (a second or more) finds the CPU lanes as they
# are then.
Budget = Callable[[], int | None]


Work = TypeVar("Work", Task, Batch)


def with_threads(work: Work, budget: Budget | None) -> Work:
    """The task, or each task of a batch, with the threads the budget gives it now."""
    if budget is None:
        return work
    threads = budget()
    if isinstance(work, Batch):
        return Batch(tuple(replace(t, threads=threads) for t in work.tasks))
    return replace(work, threads=threads)


@dataclass(frozen=True)
class Progress:
    """How far the running step is, 0..1, sent before its Reply."""

    done: float


@dataclass(frozen=True)
class Preload:
    """Load the model of a step that a job will soon reach, while the lane has nothing to run:
    its first job then waits neither for the worker to start nor for the load."""

    step: str
    params: dict[str, Any]
    model: str | None
    home: Path
    threads: int | None  # the count to load for, as Task.threads: every core; None: the share
    timeout: float | None = None  # the rule's limit in seconds; None: the settings' default


@dataclass(frozen=True)
class Unload:
    models: list[str] | None  # None: every model


@dataclass(frozen=True)
class Failure:
    """A step's exception as plain data: its class may not even import in the daemon."""

    kind: str
    message: str
    transient: bool
    expected: bool  # a failure a user can act on: no traceback in error.json
    traceback: list[str]
    no_room: bool = False  # the disk was full or read-only: the job waits, no attempt counted

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        """The one classification of a failure, in a worker or in the daemon."""
        if isinstance(exc, RemoteStepError):  # classified in its worker already
            return exc.failure
        return cls(
            kind=type(exc).__name__,
            message=describe(exc),
            transient=is_transient(exc),
            expected=isinstance(exc, StepError | StepUnavailableError | OSError),
            traceback=traceback.format_exception(exc)[-3:],
            no_room=is_no_room(exc),
        )


class RemoteStepError(Exception):
    """A step failed inside its worker: its exception, carried back as plain data."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


@dataclass(frozen=True)
class Reply:
    result: StepResult | None = None
    failure: Failure | None = None
    device: str = "cpu"  # where the step ran
    device_reason: str = ""  # why there, e.g. "cpu: no GPU device node (...)"
    notes: list[str] = field(default_factory=list)  # what the worker did besides running it
    loaded: list[str] = field(default_factory=list)  # models this request loaded
    resident: list[models.Resident] = field(default_factory=list)
    gpu_bytes: int | None = None  # torch's allocated GPU memory after the request
    each: list[Reply] = field(default_factory=list)  # a Batch's: one per task, in order
    batch: int = 1  # how many jobs' steps ran together in the call that made `result`
    threads: int = 0  # the CPU threads the step ran with; 0: none given (not a step's reply)


def describe(exc: BaseException) -> str:
    """A sentence a user can act on, not a repr."""
    if isinstance(exc, PermissionError):
        return f"cannot read the file: permission denied ({exc.filename or ''})".replace(" ()", "")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "the disk is full; free some space, then retry"
    return str(exc) or type(exc).__name__


def thread_env(threads: int) -> dict[str, str]:
    """The variables native libraries read their thread count from when they load."""
    return dict.fromkeys(THREAD_ENV, str(threads))
