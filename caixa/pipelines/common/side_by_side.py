"""A batch's jobs run side by side on threads of the worker: for models whose one call spreads
badly over threads (CTranslate2's Whisper, Piper's voices) while calls at once, a thread each,
keep every core busy. Each job gets a result or its own failure, except running out of memory,
which ends the batch: the worker then runs each job alone, with its retries for memory."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from caixa.errors import out_of_memory
from caixa.pipelines.base import StepInput, StepResult


def each(
    run: Callable[[StepInput], StepResult], jobs: Sequence[StepInput], at_once: int
) -> list[StepResult | Exception]:
    """`run` for each job, `at_once` at a time, in order. Each runs in a copy of the caller's
    context (the model the worker serves, the log's job fields), as the caller would."""

    def one(context: contextvars.Context, job: StepInput) -> StepResult | Exception:
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
        return list(threads.map(one, contexts, jobs))
