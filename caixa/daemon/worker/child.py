"""A worker process: it runs steps for the daemon, one at a time, and keeps their models loaded.

The daemon starts it (pool.py) with its end of a socket pair and speaks to it in the pickled
messages of protocol.py. Only a step's `run` happens here. The journal, publishing and every
decision about a job stay in the daemon, so a worker that dies (a crash in a native library,
the kernel's OOM killer, a step over its time limit) loses only the step it held.

A thread reads the socket. When the daemon goes away, even by SIGKILL, the socket ends and
the worker kills its process group (itself and any program a step started). No orphan keeps
writing into a job's folder that a restarted daemon is about to use again.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from structlog.contextvars import bound_contextvars

from caixa import log, models, offline
from caixa.daemon.worker.device import choose, detect_memory, gpu_bytes, resolve_device
from caixa.daemon.worker.protocol import (
    Batch,
    Failure,
    Hello,
    Preload,
    Progress,
    Reply,
    Task,
    Unload,
    WorkerConfig,
    describe,
)
from caixa.errors import StepError, out_of_memory
from caixa.pipelines.base import Step, StepResult, unheard
from caixa.pipelines.registry import default_registry

logger = log.get("caixa.worker")
PROGRESS_EVERY = 1.0  # seconds between two Progress messages of one step


class Worker:
    """What runs inside the worker process."""

    def __init__(self, config: WorkerConfig, send: Callable[[Any], None] | None = None) -> None:
        self.config = config
        self.send = send  # to the daemon, for a step's Progress; None: nobody listens
        self.device = resolve_device(config.device) if config.lane == "accelerator" else "cpu"
        self.budget = config.model_memory or detect_memory(self.device)
        self.cores = sorted(os.sched_getaffinity(0))  # every core it may use
        self.pinned = config.pin and self.device == "cpu"
        self.threads = 0  # what the last step ran with (and its cores, when pinned)
        self.share = min(config.threads, len(self.cores))  # its lane's, on the CPU
        self._use_threads(self.share)

    def handle(self, request: Task | Batch | Preload | Unload) -> Reply:
        if isinstance(request, Batch):
            return self._batch(request)
        if isinstance(request, Preload):
            return self._preload(request)
        if isinstance(request, Unload):
            gone = models.unload(request.models)
            if gone:
                logger.info("models unloaded", models=gone, why="kept alive long enough")
            return self._reply(notes=[f"unloaded {', '.join(gone)}"] if gone else [])
        before = {r.name for r in models.resident()}
        with bound_contextvars(**request.context):
            try:
                result, (device, why), notes = self._execute(request)
            except Exception as exc:
                return self._reply(failure=Failure.of(exc), loaded_from=before)
        return self._reply(
            result=result,
            device=device,
            device_reason=why,
            notes=notes,
            loaded_from=before,
            threads=self.threads,
        )

    def _place(self, step: type[Step], params: Any) -> tuple[str, str]:
        """The device this step's library can use, and why (device.choose): per step, since
        llama.cpp may reach a GPU that torch does not, or the other way round."""
        if self.config.lane != "accelerator":
            return "cpu", "cpu: a CPU lane"
        backend_of = getattr(step, "backend_of", None)  # a plugin may not have it
        return choose(self.config.device, backend_of(params) if backend_of else None)

    def _batch(self, batch: Batch) -> Reply:
        """The tasks through the step's `run_batch`, one reply each. A task whose input is bad
        fails alone (`run_batch` returns its exception); when the batch as a whole fails (out
        of memory, a bug), each task runs alone, so only the one at fault fails."""
        first = batch.tasks[0]
        before = {r.name for r in models.resident()}
        with bound_contextvars(step=first.step, batch=len(batch.tasks)):
            try:
                outcomes, (device, why), notes = self._run_batch(batch)
            except Exception as exc:
                logger.warning("the batch failed; running its steps one by one", error=str(exc))
                return self._reply(each=[self.handle(t) for t in batch.tasks], loaded_from=before)
        each = [
            self._reply(failure=Failure.of(o))
            if isinstance(o, BaseException)
            else self._reply(
                result=o,
                device=device,
                device_reason=why,
                notes=notes,
                batch=len(outcomes),
                threads=self.threads,
            )
            for o in outcomes
        ]
        return self._reply(each=each, loaded_from=before)

    def _preload(self, request: Preload) -> Reply:
        """The step's model loaded as its `run` would load it with the threads asked for, on
        the share's cores (CPU steps run meanwhile). Never in place of another model: a job
        under way may need that one. Best effort: a load that fails here fails again in the
        step, which says so in its job's error."""
        before = {r.name for r in models.resident()}
        with bound_contextvars(step=request.step):
            try:
                self._load_ahead(request)
            except Exception as exc:
                if request.model and request.model not in before:  # what it half loaded
                    models.unload([request.model])
                logger.info("model not loaded ahead", model=request.model, error=str(exc))
        return self._reply(loaded_from=before)

    def _load_ahead(self, request: Preload) -> None:
        step = default_registry().get(request.step)
        preload = getattr(step, "preload", None)  # a step not built on BaseStep
        if preload is None:
            return
        if crowding := models.crowded_out(request.model, self.budget):
            logger.info("model not loaded ahead: it would unload", models=crowding)
            return
        params = step.Params.model_validate(request.params)
        device = self._place(step, params)[0]
        self._use_threads(self.share)
        with models.serving(request.model):
            preload(params, device, self._budget(step, params, request.threads), request.home)

    def _run_batch(
        self, batch: Batch
    ) -> tuple[list[StepResult | Exception], tuple[str, str], list[str]]:
        first = batch.tasks[0]
        step = default_registry().get(first.step)
        params = step.Params.model_validate(first.params)
        placed = self._place(step, params)
        evicted = models.make_room(first.model, self.budget)
        notes = [f"unloaded {', '.join(evicted)} to make room for {first.model}"] if evicted else []
        threads = self._use_threads(self._budget(step, params, first.threads))
        jobs = [replace(t.job, device=placed[0], threads=threads) for t in batch.tasks]
        with self._telling() as progress, models.serving(first.model):
            jobs[0] = replace(jobs[0], progress=progress)  # a batch shows as its first job
            outcomes = list(step().run_batch(jobs, params))  # type: ignore[attr-defined]
        if len(outcomes) != len(jobs):
            raise StepError(
                f"{first.step}'s run_batch returned {len(outcomes)} results for {len(jobs)} jobs"
            )
        return outcomes, placed, [*notes, f"ran in a batch of {len(jobs)}"]

    def _execute(self, task: Task) -> tuple[StepResult, tuple[str, str], list[str]]:
        """Run the step; when memory runs out, unload everything and try once more (with the
        step's lighter settings, if it has any), then on the CPU if the rule allows it."""
        step = default_registry().get(task.step)
        params = step.Params.model_validate(task.params)
        placed = self._place(step, params)
        device = placed[0]
        notes = []
        evicted = models.make_room(task.model, self.budget)
        if evicted:
            notes.append(f"unloaded {', '.join(evicted)} to make room for {task.model}")
        try:
            return self._run(step, params, task, device), placed, notes
        except Exception as exc:
            if not out_of_memory(exc):
                raise
            logger.warning("out of memory; unloading every model and retrying", error=str(exc))
        models.unload()
        _empty(task.job.workdir)
        lighter = getattr(step, "lighter", None)
        lighter_params = lighter(params) if lighter else None
        notes.append(
            "ran out of memory; retried with every other model unloaded"
            + (" and lighter settings" if lighter_params is not None else "")
        )
        try:
            return self._run(step, lighter_params or params, task, device), placed, notes
        except Exception as exc:
            if not out_of_memory(exc):
                raise
            if device == "cpu" or not task.cpu_fallback:
                raise StepError(_oom_advice(task, device, lighter_params is not None)) from exc
        models.unload()
        _empty(task.job.workdir)
        logger.warning("the GPU ran out of memory twice; running on the CPU", device=device)
        try:
            result = self._run(step, lighter_params or params, task, "cpu")
        finally:
            models.unload()  # its CPU copies must not serve the next run on the GPU
        gone = "cpu: the GPU ran out of memory twice (cpu_fallback: true)"
        return result, ("cpu", gone), [*notes, "ran on the CPU: the GPU ran out of memory twice"]

    def _budget(self, step: type[Step], params: Any, given: int | None) -> int:
        """The lane's count for this step (`given`: every core while no CPU step runs) when its
        model takes a new count per call; else the share, which a model fixes at load."""
        follows = getattr(step, "threads_follow", None)  # a step not built on BaseStep: no
        if given is None or follows is None or not follows(params):
            return self.share
        return min(max(self.share, given), len(self.cores))  # a Ray node: all of its own

    def _use_threads(self, count: int) -> int:
        """Run on `count` threads (and, pinned, on `count` cores): every thread of this process
        moves, since a library's pool threads keep the cores they started on. The count."""
        if self.pinned and count != self.threads:
            cores = set(self.cores[-count:])
            for task in Path("/proc/self/task").iterdir():
                with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                    os.sched_setaffinity(int(task.name), cores)
        self.threads = count
        torch = sys.modules.get("torch")
        if torch is not None and torch.get_num_threads() != count:
            torch.set_num_threads(count)  # a library may have changed it
        return count

    def _run(self, step: type[Step], params: Any, task: Task, device: str) -> StepResult:
        threads = self._use_threads(self._budget(step, params, task.threads))
        with self._telling() as progress, models.serving(task.model):
            job = replace(task.job, device=device, threads=threads, progress=progress)
            return step().run(job, params)

    @contextlib.contextmanager
    def _telling(self) -> Iterator[Callable[[float], None]]:
        """Where a running step says how far it is: passed on to the daemon until it ends."""
        teller = _Teller(self.send) if self.send else None
        try:
            yield teller or unheard
        finally:
            if teller is not None:
                teller.stop()  # a thread the step left behind says no more

    def _reply(self, loaded_from: set[str] | None = None, **fields: Any) -> Reply:
        held = models.resident()
        loaded = [r.name for r in held if loaded_from is not None and r.name not in loaded_from]
        return Reply(loaded=loaded, resident=held, gpu_bytes=gpu_bytes(), **fields)


class _Teller:
    """A step's progress, passed on to the daemon at most once a PROGRESS_EVERY."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        self.send: Callable[[Any], None] | None = send
        self.last = 0.0
        self._lock = threading.Lock()  # a step may report from several of its threads

    def __call__(self, done: float) -> None:
        with self._lock:
            now = time.monotonic()
            if self.send is None or now - self.last < PROGRESS_EVERY or not math.isfinite(done):
                return
            self.last = now
            with contextlib.suppress(OSError):  # the daemon is gone: _read ends this process
                self.send(Progress(min(max(float(done), 0.0), 1.0)))

    def stop(self) -> None:
        with self._lock:
            self.send = None


def _empty(folder: Path) -> None:
    """A retry gets the empty folder a step is promised, not what the failed try left."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()


def _oom_advice(task: Task, device: str, lighter: bool) -> str:
    tried = "every other model unloaded" + (" and lighter settings" if lighter else "")
    fixes = [
        "use a smaller model or smaller inputs",
        "close programs that hold GPU memory" if device != "cpu" else "free some memory",
    ]
    if device != "cpu":
        fixes.append(
            f"or let rule {task.job.rule!r} fall back to the CPU with `cpu_fallback: true`"
        )
    return (
        f"{device} ran out of memory running {task.step}"
        f"{f' with model {task.model}' if task.model else ''}, even with {tried}; "
        + ", ".join(fixes)
    )


def _read(conn: Connection, inbox: queue.Queue[Any]) -> None:
    try:
        while True:
            inbox.put(conn.recv())
    except (EOFError, OSError):  # the daemon is gone: nobody wants our work any more
        if os.getpgrp() == os.getpid():  # the group the daemon made for us and our programs
            os.killpg(os.getpid(), signal.SIGKILL)
        os._exit(1)


def main() -> None:
    conn = Connection(int(sys.argv[1]))
    config: WorkerConfig = conn.recv()
    sys.path[:] = config.sys_path  # plugins found where the daemon finds them
    offline.enforce()
    log.configure(**config.log)
    sending = threading.Lock()  # a step's Progress and a Reply never interleave on the socket

    def send(message: Any) -> None:
        with sending:
            conn.send(message)

    try:
        worker = Worker(config, send)
    except Exception as exc:
        conn.send(Hello(os.getpid(), config.device, 0, error=describe(exc)))
        return
    conn.send(Hello(os.getpid(), worker.device, worker.budget))
    logger.info("worker ready", lane=config.lane, device=worker.device, threads=config.threads)
    inbox: queue.Queue[Any] = queue.Queue()
    threading.Thread(target=_read, args=(conn, inbox), daemon=True).start()
    while True:
        send(worker.handle(inbox.get()))
