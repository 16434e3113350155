"""A batch's jobs run side by side on threads of the worker: for models whose one call spreads
badly over threads (CTranslate2's Whisper, Piper's voices, torch's small vision networks) while
calls at once, a thread each, keep every core busy. Each job gets a result or its own failure,
except running out of memory, which ends the batch: the worker then runs each job alone, with
its retries for memory."""

from __future__ import annotations

import contextvars
import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from caixa.errors import out_of_memory
from caixa.pipelines.base import StepInput, StepResult

# What the extra copies of a model may take, for a library whose model object serves one call
# at a time (CTranslate2's workers, ultralytics' predictor): as many jobs at once as copies fit.
COPIES_MEMORY = 1 << 30

_slot: contextvars.ContextVar[int] = contextvars.ContextVar("caixa_side_by_side_slot", default=0)


def copies(model_bytes: int) -> int:
    """How many copies of a model of that size COPIES_MEMORY holds, beside the first."""
    return 1 + COPIES_MEMORY // max(model_bytes, 1)


def slot() -> int:
    """Which of the batch's threads runs the current job (0 alone): a step whose library's
    model takes one call at a time loads a copy per slot."""
    return _slot.get()


def on_cpu(
    run: Callable[[StepInput], StepResult],
    jobs: Sequence[StepInput],
    threads: int | None,
    most: int | None = None,
) -> list[StepResult | Exception]:
    """A batch on a CPU: its jobs side by side, one thread each, as many at once as the lane's
    budget gives threads (and at most `most`, what memory allows). On a GPU, or with the
    rule's own `threads`, one after another as `run` alone would run them."""
    cpu = jobs[0].device == "cpu" and not threads
    at_once = min(len(jobs), jobs[0].threads, most or len(jobs)) if cpu else 1
    alone = [replace(job, threads=1) for job in jobs] if at_once > 1 else jobs
    return each(run, alone, at_once)


def each(
    run: Callable[[StepInput], StepResult], jobs: Sequence[StepInput], at_once: int
) -> list[StepResult | Exception]:
    """`run` for each job, `at_once` at a time, in order. Each runs in a copy of the caller's
    context (the model the worker serves, the log's job fields), as the caller would, with the
    slot of the thread it runs on."""
    places = threading.local()
    numbers = itertools.count()

    def one(context: contextvars.Context, job: StepInput) -> StepResult | Exception:
        if not hasattr(places, "slot"):
            places.slot = next(numbers)
        context.run(_slot.set, places.slot)
        try:
            return context.run(run, job)
        except Exception as exc:  # its own failure, as `run` alone would raise it
            if out_of_memory(exc):
                raise
            return exc

    contexts = [contextvars.copy_context() for _ in jobs]
    if at_once <= 1:
        return [one(c, j) for c, j in zip(contexts, jobs, strict=True)]
    with ThreadPoolExecutor(at_once) as threads:
        futures = [threads.submit(one, c, j) for c, j in zip(contexts, jobs, strict=True)]
        try:
            return [f.result() for f in futures]
        except BaseException:  # out of memory: the jobs not started yet never start
            threads.shutdown(cancel_futures=True)
            raise
