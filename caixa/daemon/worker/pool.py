"""The daemon's side of the worker processes: start them when first needed, send them steps,
notice when one dies or runs over its time limit, start it again, and unload models nobody
has used for the keep-alive time.

One process per worker, started as a new session so that killing it also kills what a step
started (tesseract, pdftoppm...). concurrent.futures' process pool is not used: one dead
worker breaks that whole pool, and it cannot stop a single task that runs too long.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from caixa import log
from caixa.daemon.worker.protocol import (
    Batch,
    Budget,
    Hello,
    Preload,
    Progress,
    RemoteStepError,
    Reply,
    Task,
    Unload,
    WorkerConfig,
    thread_env,
    with_threads,
)
from caixa.errors import StepError, TransientError

logger = log.get("caixa.pool")
START_TIMEOUT = 120.0  # seconds a worker may take to start (it may import torch)
UNLOAD_TIMEOUT = 60.0
ENTRY = "from caixa.daemon.worker.child import main; main()"


class WorkerDiedError(TransientError):
    """The worker process running a step died; the step may well pass on the next try."""


class StepTimeoutError(StepError):
    """A step ran over its time limit and was stopped."""


class Draining(BaseException):
    """The pool leases no more workers (the daemon stops): a phase that waited for one leaves
    its job as the journal has it, to resume at the next start as after a crash, instead of
    starting a step the stop would then wait for. A BaseException, so that no step's error
    handling takes it for the step's failure."""


class WorkerProcess:
    """One worker: started on first use and again after it dies."""

    def __init__(self, name: str, config: WorkerConfig, on_change: Callable[[], None]) -> None:
        self.name = name
        self.config = config
        self.on_change = on_change  # what it does or holds changed: the status shows it
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None
        self.hello: Hello | None = None
        # the step it runs and since when, as one value: the status thread reads it unlocked
        self.busy: tuple[Task, float] | None = None
        self.progress: float | None = None  # how far the busy step says it is, 0..1
        self.reply: Reply = Reply()  # the last one: what it holds now
        self.started = 0  # processes started so far; more than one means restarts

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def run(self, task: Task | Batch, timeout: float, budget: Budget | None = None) -> Reply:
        """Run one step, or a batch of them (whose reply holds each one's outcome), on the
        threads `budget` gives once the worker is up; raise RemoteStepError, WorkerDiedError
        or StepTimeoutError when it does not end well."""
        self._start()
        task = with_threads(task, budget)
        # a batch shows as its first task, with the batch's limit (the lane's stall check)
        first = replace(task.tasks[0], timeout=timeout) if isinstance(task, Batch) else task
        self.busy, self.progress = (first, time.time()), None
        self.on_change()
        try:
            reply = self._call(task, timeout)
        except TimeoutError:
            raise StepTimeoutError(_overran(first, timeout)) from None
        finally:
            self.busy = self.progress = None
        if reply.failure is not None:
            raise RemoteStepError(reply.failure)
        return reply

    def preload(self, request: Preload, timeout: float) -> Reply:
        """Start the worker if need be and load a step's model (protocol.Preload)."""
        self._start()
        try:
            return self._call(request, timeout)
        except TimeoutError:
            raise StepTimeoutError(f"loading {request.model} took over {timeout:g} s") from None

    def unload(self, names: list[str]) -> None:
        if self.conn is not None:
            self._call(Unload(names), UNLOAD_TIMEOUT)

    def _start(self) -> None:
        """Up and answering: started again if it died while nobody used it."""
        if self.proc is not None and self.proc.poll() is not None:
            logger.warning("worker died while idle", worker=self.name, code=self.kill())
        self._ensure()

    def _ensure(self) -> Hello:
        if self.conn is not None and self.hello is not None:
            return self.hello
        ours, theirs = socket.socketpair()
        with theirs:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", ENTRY, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
                env={**os.environ, **thread_env(self.config.threads)},
            )
        self.conn = Connection(ours.detach())
        self.started += 1
        self.conn.send(self.config)
        try:
            self.hello = self._receive(START_TIMEOUT)
        except TimeoutError:
            raise WorkerDiedError(
                f"the {self.name} worker did not start in {START_TIMEOUT:g} s"
            ) from None
        if self.hello.error:  # it cannot run steps here (a device asked for that is missing)
            error = self.hello.error
            self.kill()
            raise StepError(error)
        logger.info("worker started", worker=self.name, pid=self.pid, device=self.hello.device)
        return self.hello

    def _call(self, request: Task | Batch | Preload | Unload, timeout: float) -> Reply:
        assert self.conn is not None
        try:
            self.conn.send(request)
        except OSError:
            raise WorkerDiedError(_death(self.name, self.kill())) from None
        self.reply = self._receive(timeout)
        return self.reply

    def _receive(self, timeout: float) -> Any:
        """The worker's answer, noting the Progress it sends before it."""
        assert self.conn is not None
        deadline = time.monotonic() + timeout
        while True:
            if not self.conn.poll(max(0.0, deadline - time.monotonic())):  # still working
                self.kill()
                raise TimeoutError
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                code = self.kill()
                raise WorkerDiedError(_death(self.name, code)) from None
            if not isinstance(message, Progress):
                return message
            self.progress = message.done
            self.on_change()

    def kill(self) -> int | None:
        """Stop it now, with whatever a step started; return how it ended. The socket closes
        only after the process is gone: another thread may be waiting on it."""
        proc, conn = self.proc, self.conn
        if proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # it leads its own group
        code = proc.wait()
        if conn is not None:
            conn.close()
        if self.proc is proc:
            self.proc = self.conn = self.hello = None
            self.reply = Reply()
            logger.info("worker stopped", worker=self.name, pid=proc.pid, code=code)
        return code

    def view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "device": self.hello.device if self.hello else None,
            "threads": self.config.threads,
            "model_memory": self.hello.model_memory if self.hello else None,
            **work_view(self.busy, self.reply, self.started, self.progress),
        }


class WorkerPool:
    """The worker processes of one lane, lent out one step at a time."""

    def __init__(
        self,
        lane: str,
        size: int,
        config: WorkerConfig,
        keep_alive: float,
        on_change: Callable[[], None],
    ) -> None:
        self.lane = lane
        self.keep_alive = keep_alive
        self.on_change = on_change
        self.workers = [WorkerProcess(f"{lane}-{i}", config, on_change) for i in range(size)]
        self._idle = list(self.workers)
        self._cond = threading.Condition()
        self._closed = False
        self._draining = False
        self._keeper = threading.Thread(target=self._keep, name=f"caixa-{lane}-keep", daemon=True)

    def run(self, task: Task | Batch, timeout: float, budget: Budget | None = None) -> Reply:
        with self._lease() as worker:
            try:
                return worker.run(task, timeout, budget)
            finally:
                self.on_change()

    def preload(self, request: Preload, timeout: float) -> Reply | None:
        """Load a step's model in the worker its step will get; None when the daemon stops or
        the load went wrong (the step then loads it, or says why not)."""
        try:
            with self._lease() as worker:
                try:
                    return worker.preload(request, timeout)
                finally:
                    self.on_change()
        except Draining:
            return None
        except Exception as exc:  # best effort: the step's own run reports what is wrong
            logger.warning("could not load a model ahead", model=request.model, error=str(exc))
            return None

    @contextmanager
    def _lease(self) -> Iterator[WorkerProcess]:
        with self._cond:
            if not self._keeper.is_alive() and not self._closed:
                self._keeper.start()
            while not self._idle and not self._closed and not self._draining:
                self._cond.wait()
            if self._draining:
                raise Draining(self.lane)
            if self._closed:
                raise RuntimeError(f"the {self.lane} workers are stopping")
            worker = self._idle.pop()  # the last one back: its models are the warmest
        try:
            yield worker
        finally:
            with self._cond:
                self._idle.append(worker)
                self._cond.notify_all()

    def _keep(self) -> None:
        """Unload models that idle workers have not used for the keep-alive time."""
        with self._cond:
            while not self._closed:
                now = time.time()
                due = {w: _expired(w, now, self.keep_alive) for w in self._idle}
                due = {w: names for w, names in due.items() if names}
                if not due:
                    self._cond.wait(self._next_expiry(now))
                    continue
                for worker in due:
                    self._idle.remove(worker)
                self._cond.release()
                try:
                    for worker, names in due.items():
                        self._unload(worker, names)
                finally:
                    self._cond.acquire()
                    self._idle.extend(due)
                    self._cond.notify_all()
                self.on_change()

    def _unload(self, worker: WorkerProcess, names: list[str]) -> None:
        try:
            worker.unload(names)
        except (TimeoutError, WorkerDiedError, OSError) as exc:
            logger.warning("worker lost while unloading", worker=worker.name, error=str(exc))

    def _next_expiry(self, now: float) -> float | None:
        ends = [r.last_used + self.keep_alive - now for w in self._idle for r in w.reply.resident]
        return max(0.05, min(ends)) if ends else None

    @property
    def slots(self) -> int:
        """How many steps it may run at once."""
        return len(self.workers)

    def held(self) -> set[str]:
        """Every model its workers hold, busy or not."""
        return {r.name for w in self.workers for r in w.reply.resident}

    def resident(self, spoken_for: Collection[str] = ()) -> set[str]:
        """The models loaded in its workers, but for a worker that holds one of `spoken_for`
        (another lane's step will go there)."""
        return {
            r.name for w in self.workers if not holds(w.reply, spoken_for) for r in w.reply.resident
        }

    def view(self) -> list[dict[str, Any]]:
        return [w.view() for w in self.workers]

    def drain(self) -> None:
        """Lease no more workers; the steps running go on."""
        with self._cond:
            self._draining = True
            self._cond.notify_all()

    def close(self) -> None:
        """Stop every worker; the lane's phases have all returned."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._keeper.is_alive():
            self._keeper.join(UNLOAD_TIMEOUT)
        for worker in self.workers:
            worker.kill()


def holds(reply: Reply, models: Collection[str]) -> bool:
    """Whether a worker's last reply says it holds any of `models`."""
    return any(r.name in models for r in reply.resident)


def _expired(worker: WorkerProcess, now: float, keep_alive: float) -> list[str]:
    return [r.name for r in worker.reply.resident if r.last_used + keep_alive <= now]


def _death(name: str, code: int | None) -> str:
    """Why a worker died, in words a user can act on."""
    if code is not None and code < 0:
        sig = signal.Signals(-code).name
        why = {
            "SIGKILL": "the kernel's out-of-memory killer does this when memory runs out",
            "SIGSEGV": "a crash inside a native library",
            "SIGABRT": "a native library aborted",
        }.get(sig, "a signal from outside")
        return f"the {name} worker process running this step was killed by {sig} ({why})"
    return f"the {name} worker process running this step exited unexpectedly (code {code})"


def _overran(task: Task, timeout: float) -> str:
    return (
        f"step {task.step} ran over its time limit of {timeout:g} s and was stopped. If it needs"
        f" longer, give rule {task.job.rule!r} a longer `timeout:` (seconds) in rules.yaml,"
        " or raise CAIXA_STEP_TIMEOUT for every rule"
    )


def work_view(
    busy: tuple[Task, float] | None, reply: Reply, started: int, progress: float | None = None
) -> dict[str, Any]:
    """What a worker is doing and holding, as `caixa status` and the page show it; the same
    for a local worker and a Ray node's."""
    task, since = busy or (None, None)
    return {
        "job": task.job.job_id if task else None,
        "step": task.step if task else None,
        "model": task.model if task else None,
        "busy_since": since,
        "progress": None if progress is None or task is None else round(progress, 3),
        "resident": [
            {"model": r.name, "loaded_at": r.loaded_at, "last_used": r.last_used, "size": r.size}
            for r in reply.resident
        ],
        "gpu_bytes": reply.gpu_bytes,
        "restarts": max(0, started - 1),
    }
