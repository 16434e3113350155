"""What happens to one job, one phase at a time: admit, each step, publish, settle; and the
two operations that put jobs back on that path: a retry, and recovery after a crash.

Each phase reads the job from the journal and records its result there before the next phase
starts, so after a crash the job resumes at its first unfinished phase. Phases run on the
scheduler's lanes; this module knows nothing about threads.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from structlog.contextvars import bound_contextvars

from caixa import __version__, filetypes, log
from caixa.daemon import outputs
from caixa.daemon.fsutil import durable_move, free_name
from caixa.daemon.journal import TERMINAL, Job, Journal, State, StepRun
from caixa.daemon.policy import Waiting
from caixa.daemon.workarea import NotRegularError, WorkArea
from caixa.daemon.worker.pool import Draining
from caixa.daemon.worker.protocol import Failure, Preload, Reply, Task
from caixa.errors import InputError, NoRoomError, StepError
from caixa.home import Home
from caixa.nofollow import open_regular
from caixa.pipelines.base import Artifact, Resource, StepInput
from caixa.pipelines.index.store import Store
from caixa.pipelines.registry import StepRegistry

logger = log.get("caixa.job")

# Runs one step in a worker process of the lane that took it; raises when the step fails.
RunStep = Callable[[Task], Reply]


class Next(NamedTuple):
    """Where a job goes after a phase: the lane of its next phase, and whether that phase runs
    a step there (else it is file work: a claim's check, a publish, a settle)."""

    lane: Resource
    step: bool = True


FILES = Next(Resource.cpu, step=False)  # a publish or a settle comes next


@dataclass(frozen=True)
class Places:
    """The roots a job's results go to, from the rules file."""

    outputs: Path
    processed: Path
    failed: Path


class JobRunner:
    def __init__(
        self,
        journal: Journal,
        work: WorkArea,
        places: Places,
        registry: StepRegistry,
        max_attempts: int,
        retry_backoff: float,
        home: Path,
    ) -> None:
        self.home = home
        self.journal = journal
        self.work = work
        self.places = places
        self.registry = registry
        self.max_attempts = max_attempts
        self.retry_backoff = retry_backoff

    def next_of(self, job: Job) -> Next:
        """Where the job's next phase runs; only steps may need the accelerator. A claim's
        check counts as its first step when that one runs on the CPU right after it."""
        if job.state in (State.queued, State.running):
            return self._next(job, job.step)
        if job.state is State.claiming:
            return Next(Resource.cpu, step=self._next(job, 0) == Next(Resource.cpu))
        return FILES

    def _next(self, job: Job, idx: int) -> Next:
        return Next(self._step_lane(job, idx)) if idx < len(job.steps) else FILES

    def _step_lane(self, job: Job, idx: int) -> Resource:
        spec = job.steps[idx]
        if "resource" in spec:  # decided when the rules were loaded
            return Resource(spec["resource"])
        found = self.registry.availability(spec["name"])  # a plan from an older caixa
        return found.step.resource if found.step is not None else Resource.cpu

    def coming(self, job: Job) -> Preload | None:
        """The first model step still ahead of an unfinished job, as the accelerator lane
        would load its model ahead (threads left to the lane)."""
        if job.state not in (State.claiming, State.queued, State.running):
            return None
        lanes = ((i, self._step_lane(job, i)) for i in range(job.step, len(job.steps)))
        idx = next((i for i, lane in lanes if lane is Resource.accelerator), None)
        if idx is None:
            return None
        spec = job.steps[idx]
        if not hasattr(self.registry.availability(spec["name"]).step, "preload"):
            return None
        return Preload(
            spec["name"], spec["params"], spec.get("model"), self.home, None, spec.get("timeout")
        )

    def waiting(self, job_id: str) -> Waiting:
        """The job as the accelerator lane's policy sees it: the model its next step would
        load (from its plan), and its rule's priority."""
        job = self.journal.get(job_id)
        spec = job.steps[job.step]
        step = self.registry.availability(spec["name"]).step
        batch = None
        if step is not None and hasattr(step, "run_batch"):
            batch = f"{spec['name']} {json.dumps(spec['params'], sort_keys=True)}"
        return Waiting(job.id, spec.get("model"), spec.get("priority", 0), batch)

    def advance(self, job_id: str, run: RunStep) -> Next | None:
        """Run the job's next phase (a step through `run`); return where the phase after it
        runs, or None when the job is finished or waits (a retry delay)."""
        job = self.journal.get(job_id)
        with bound_contextvars(job=job.id, rule=job.rule):
            match job.state:
                case State.claiming:
                    return self._admit(job)
                case State.queued | State.running if job.step < len(job.steps):
                    return self._run_step(job, run)
                case State.queued | State.running | State.publishing:
                    return self._publish(job)
                case State.settling:
                    self._settle(job)
        return None

    # --- phases ---------------------------------------------------------------------------

    def _admit(self, job: Job) -> Next | None:
        source = self.work.source(job.id, job.name)
        if not job.final_path and not source.exists():
            # the claim's rename failed, and so did forgetting it (no room): the file is still
            # in its inbox and is taken again there
            self.journal.forget(job.id)
            return None
        if job.final_path and not source.exists():
            # `caixa retry` recorded the job before moving its file back from failed/, and is
            # moving it now: wait for the next look rather than fail a file in flight
            return None
        try:  # from one descriptor of the file itself: never what a symlink points to
            with open_regular(source) as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise InputError("the file is empty (0 bytes); nothing to process")
                media_type = filetypes.of_bytes(f.read(filetypes.SNIFF_BYTES))
                f.seek(0)
                sha = hashlib.file_digest(f, "sha256").hexdigest()
        except (OSError, StepError) as exc:
            self._fail(job, "claim", exc)
            return FILES
        twin = self.journal.admit(job.id, sha256=sha, size=size, media_type=media_type)
        if twin:
            logger.info("duplicate", duplicate_of=twin, sha256=sha)
            return FILES
        logger.info("queued", size=size, media_type=media_type, steps=len(job.steps))
        return self._next(job, 0)

    def _run_step(self, job: Job, run: RunStep) -> Next | None:
        idx, spec = job.step, job.steps[job.step]
        name = spec["name"]
        with bound_contextvars(step=name):
            try:
                runs = self.journal.step_runs(job.id)
                job_input = StepInput(
                    job_id=job.id,
                    rule=job.rule,
                    source=self.work.source(job.id, job.name),
                    source_name=job.name,
                    source_path=job.rel,
                    media_type=job.media_type or "application/octet-stream",
                    artifacts=tuple(_artifacts(runs)),
                    workdir=self.work.fresh_step_dir(job.id, idx),
                    home=self.home,
                    fields=_fields(runs),
                )
                task = Task(
                    name,
                    spec["params"],
                    job_input,
                    spec.get("model"),
                    timeout=spec.get("timeout"),
                    cpu_fallback=spec.get("cpu_fallback", False),
                    cluster=spec.get("cluster", False),
                )
                self.journal.start_step(job.id, idx, name)
                started = time.monotonic()
                try:
                    done = run(task)
                except Draining:  # no worker took it: the journal says no step started
                    try:
                        self.journal.unstart_step(job.id, idx)
                    except Exception as exc:  # left started, it resumes as after a crash
                        logger.warning("could not take back a step's start", error=str(exc))
                    raise
                seconds = time.monotonic() - started
            except Exception as exc:
                _wait_for_room(exc)
                return self._step_failed(job, name, exc)
            result = done.result
            assert result is not None
            self.journal.finish_step(
                job.id,
                idx,
                {
                    "artifacts": [a.to_json() for a in result.artifacts],
                    "data": result.data,
                    "models": result.models,
                    "fields": result.fields,
                    "params": spec["params"],
                    "resource": self._step_lane(job, idx),
                    "device": done.device,
                    "device_reason": done.device_reason,
                    "notes": done.notes,
                    "seconds": round(seconds, 6),
                    **({"batch": done.batch} if done.batch > 1 else {}),
                    **({"threads": done.threads} if done.threads else {}),
                },
            )
            logger.info(
                "step done",
                seconds=round(seconds, 3),
                outputs=len(result.artifacts),
                device=done.device,
                **({"threads": done.threads} if done.threads else {}),
                **({"notes": done.notes} if done.notes else {}),
            )
        return self._next(job, idx + 1)

    def _step_failed(self, job: Job, name: str, exc: Exception) -> Next | None:
        if Failure.of(exc).transient and job.attempts + 1 < self.max_attempts:
            delay = self.retry_backoff * 2**job.attempts
            self.journal.retry_later(job.id, job.attempts + 1, self._error(job, name, exc), delay)
            logger.warning(
                "step will be retried", error=str(exc), attempt=job.attempts + 1, delay=delay
            )
            return None
        self._fail(job, name, exc)
        return FILES

    def _publish(self, job: Job) -> Next | None:
        root = self.places.outputs
        runs = self.journal.step_runs(job.id)
        fields = outputs.template_fields(
            job.rule, job.inbox, job.rel, job.media_type, job.created_at, _fields(runs)
        )
        try:
            rendered = outputs.render(job.plan["output"], fields)
            folder = self.journal.reserve_output(
                job.id, functools.partial(outputs.free_folder, root, rendered)
            )
            artifacts = [a for a in _artifacts(runs) if a.publish]
            names = outputs.publish(root / folder, root, artifacts, self._manifest(job, runs))
        except (OSError, ValueError, KeyError) as exc:
            _wait_for_room(exc)
            if Failure.of(exc).transient and job.attempts + 1 < self.max_attempts:
                error = self._error(job, "publish", exc)
                self.journal.retry_later(job.id, job.attempts + 1, error, self.retry_backoff)
                return None
            self._fail(job, "publish", exc)
            return FILES
        logger.info("published", folder=folder, outputs=names)
        self._place_in_index(job, folder)
        self.journal.settle(job.id, State.done, final_path=self._destination(job, State.done))
        return FILES

    def _place_in_index(self, job: Job, folder: str) -> None:
        """Tell the search index where an indexed job's outputs went, so hits say where they
        are without the journal. A failure costs only that: search asks the journal then."""
        if not any(s["name"] == "index" for s in job.steps) or not Home(self.home).index.exists():
            return
        try:
            with Store(Home(self.home).index, create=False) as store:
                store.place(job.id, folder)
        except Exception as exc:
            logger.warning("the index does not know where the outputs went", error=str(exc))

    def _settle(self, job: Job) -> None:
        """Move the source to its last place, recorded before it moves (so a crash in between
        resumes the same move), then forget the work folder."""
        source = self.work.source(job.id, job.name)
        final = Path(job.final_path) if job.final_path else None
        if final is None:  # a duplicate: its place is decided only now
            final = self._destination(job, job.outcome or State.done)
            if final is not None:
                self.journal.set_final_path(job.id, final)
        if job.outcome is State.failed and final is not None:
            outputs.write_error(final, job.error or {})
        if final is None:
            source.unlink(missing_ok=True)
        else:
            outputs.move_source(source, final)
        self.journal.finish(job.id, job.outcome or State.done)
        self.work.remove(job.id)
        logger.info(
            "finished", outcome=str(job.outcome), source_now=str(final) if final else "deleted"
        )

    def _destination(self, job: Job, outcome: State) -> Path | None:
        """Where the source goes: failed/, processed/, back to its inbox, or nowhere."""
        if outcome is State.failed:
            return outputs.archive_target(self.places.failed, job.rule, job.rel)
        on_success = job.plan["on_success"]
        if on_success == "delete":
            return None
        if on_success == "keep":
            home = free_name((job.inbox / job.rel).parent, job.name)
            source = self.work.source(job.id, job.name)
            if source.exists():  # remember it first, or the watcher would take it again
                st = source.stat()
                self.journal.keep(home, st.st_size, st.st_mtime_ns)
            return home
        return outputs.archive_target(self.places.processed, job.rule, job.rel)

    # --- helpers --------------------------------------------------------------------------

    def _fail(self, job: Job, where: str, exc: BaseException) -> None:
        error = self._error(job, where, exc)
        final = self._destination(job, State.failed)
        self.journal.settle(job.id, State.failed, error, final_path=final)
        logger.error("job failed", step=where, error=error["message"], kind=error["error"])

    def _error(self, job: Job, where: str, exc: BaseException) -> dict[str, Any]:
        failure = Failure.of(exc)
        return {
            "job": job.id,
            "file": job.name,
            "inbox": str(job.inbox),
            "rule": job.rule,
            "step": where,
            "error": failure.kind,
            "message": failure.message,
            "when": outputs.now_iso(),
            "attempts": job.attempts + 1,
            "retry": (
                f"Fix the cause, then move the file back into {(job.inbox / job.rel).parent}"
                f" or run: caixa retry {job.id}"
            ),
            **({} if failure.expected else {"traceback": failure.traceback}),
        }

    def _manifest(self, job: Job, runs: list[StepRun]) -> dict[str, Any]:
        steps = [
            {
                "name": run.name,
                "params": run.result["params"],
                "resource": run.result["resource"],
                "device": run.result.get("device", "cpu"),
                "device_reason": run.result.get("device_reason", ""),
                **({"notes": run.result["notes"]} if run.result.get("notes") else {}),
                **({"batch": run.result["batch"]} if run.result.get("batch") else {}),
                **({"threads": run.result["threads"]} if run.result.get("threads") else {}),
                "started_at": outputs.now_iso(run.started_at),
                "seconds": run.result["seconds"],
                "models": run.result["models"],
                "data": run.result["data"],
                **({"fields": run.result["fields"]} if run.result.get("fields") else {}),
                "artifacts": [a["name"] for a in run.result["artifacts"]],
            }
            for run in runs
            if run.result
        ]
        now = time.time()
        return {
            "caixa": __version__,
            "job": job.id,
            "source": {
                "name": job.name,
                "inbox": str(job.inbox),
                "path": job.rel,
                "sha256": job.sha256,
                "size": job.size,
                "media_type": job.media_type,
            },
            "rule": {"name": job.rule, "version": job.rule_version},
            "steps": steps,
            "models": sorted({m for s in steps for m in s["models"]}),
            "timings": {
                "claimed_at": outputs.now_iso(job.created_at),
                "published_at": outputs.now_iso(now),
                "seconds": round(now - job.created_at, 3),
            },
        }


def _artifacts(runs: list[StepRun]) -> list[Artifact]:
    """What the finished steps made, in order."""
    return [Artifact.from_json(a) for run in runs if run.result for a in run.result["artifacts"]]


def _fields(runs: list[StepRun]) -> dict[str, str]:
    """What the steps so far said about the file; a later step's word wins."""
    found: dict[str, str] = {}
    for run in runs:
        if run.result:
            found.update(run.result.get("fields", {}))
    return found


def _wait_for_room(exc: Exception) -> None:
    """A step or a publish that found no room to write is no fault of the job: raise
    NoRoomError, so the scheduler pauses the daemon and the job waits at the same phase
    without an attempt counted (its journal state is the one it had before the phase)."""
    failure = Failure.of(exc)
    if failure.no_room:
        raise NoRoomError(failure.message) from exc


def requeue(journal: Journal, work: WorkArea, job: Job) -> str | None:
    """Run a failed job again from its first step (`caixa retry`); why not, when it cannot be.
    The journal records it first, then its source moves back from failed/ into the work area:
    a crash in between is finished by `recover`, and a daemon that looks in between waits."""
    source = Path(job.final_path or "")
    if not job.final_path or not os.path.lexists(source):
        return f"its file is no longer at {source}; move it back into its inbox"
    if source.is_symlink() or not source.is_file():
        return f"{source} is not a regular file now; caixa takes only regular files"
    journal.requeue(job.id)
    try:
        work.claim(source, job.id, job.name)
    except NotRegularError as exc:  # swapped just now: `recover` forgets the half-made retry
        return f"{source}: {exc.strerror}"
    outputs.error_file(source).unlink(missing_ok=True)
    return None


def recover(journal: Journal, work: WorkArea, failed_root: Path) -> None:
    """Finish what a crash interrupted: half-made claims and retries, and work folders that
    no unfinished job owns."""
    for job in journal.jobs(State.claiming):
        source = work.source(job.id, job.name)
        retried_from = Path(job.final_path) if job.final_path else None
        if not source.exists() and retried_from and retried_from.exists():
            with contextlib.suppress(NotRegularError):  # swapped: forgotten at the next start
                work.claim(retried_from, job.id, job.name)  # `caixa retry` was cut short
        elif not source.exists():  # the rename never happened: the file is in its inbox
            journal.forget(job.id)
            work.remove(job.id)
    for job_id in work.job_ids():
        try:
            job = journal.get(job_id)
        except KeyError:
            job = None
        if job is None or job.state in TERMINAL:
            _rescue(work, job_id, failed_root)


def _rescue(work: WorkArea, job_id: str, failed_root: Path) -> None:
    """A work folder of no unfinished job (a journal deleted by hand): a source still in it
    goes to failed/ with a note, never silently away."""
    folder = work.source(job_id, "_").parent
    for source in folder.iterdir() if folder.is_dir() else []:
        target = outputs.archive_target(failed_root, "_recovered", source.name)
        outputs.write_error(
            target,
            {
                "file": source.name,
                "error": "OrphanedWork",
                "message": f"found in the work area ({job_id}) with no unfinished job",
                "retry": "move it back into an inbox",
            },
        )
        durable_move(source, target)
        logger.warning("orphaned work rescued", path=str(target))
    work.remove(job_id)
