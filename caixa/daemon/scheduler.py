"""Lanes: CPU phases run in parallel up to a limit; accelerator steps run strictly one at a time,
on one lane that owns the GPU (or, with no GPU, the heavy model work on a share of the cores).

Admitting, publishing and settling run on the daemon's CPU threads; a step's `run` goes to a
worker process of its lane (pool.py), and waits there for a free one. The CPU lane takes phases
in the order they come. The accelerator lane is one thread fed from a ready set, which picks
the next step by model (policy.py), so that models swap as little as possible. When the step
it picks can run several jobs at once (`run_batch`) and more jobs wait with the same step and
params, it takes them along: each job's phase runs as usual on a thread of its own, up to the
point where it hands its task over, and the tasks then go to the worker as one Batch
(`_Gather`). While it has nothing to run or choose from, a new job with a model step ahead
has it load that step's model (`_look_ahead`: the step's `preload` hook, never in place of
another model), so the job's CPU steps and the load overlap.

With no GPU the accelerator worker keeps to its share of the cores, so CPU steps still move
while a model works. The share holds only while there is CPU work: a step the accelerator lane
starts while no CPU step runs, waits for a worker or is queued for a thread gets every core
(`_threads`); the next one after CPU work arrives gets the share again (a running step keeps
its count). Claims, publishes and settles do not count, running or queued: they are brief file
work, and a stream of model jobs would otherwise lose half the cores to each one's own publish
(a batch's jobs publish all at once).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from caixa import log
from caixa.config.settings import Settings
from caixa.daemon.health import ThreadDeaths
from caixa.daemon.jobs import JobRunner, Next
from caixa.daemon.journal import Job
from caixa.daemon.lanestate import StateFile, Throughput
from caixa.daemon.policy import ReadySet, Waiting
from caixa.daemon.space import Room
from caixa.daemon.worker import ray_pool
from caixa.daemon.worker.pool import Draining, WorkerPool
from caixa.daemon.worker.protocol import (
    Batch,
    Budget,
    Preload,
    RemoteStepError,
    Reply,
    Task,
    WorkerConfig,
)
from caixa.errors import is_no_room
from caixa.pipelines.base import Resource

logger = log.get("caixa.scheduler")

# CPU-lane phases in flight per CPU worker. Admitting, publishing and settling mostly wait on
# fsync; with more of them in flight than workers, their syncs share the filesystem's journal
# commits (the kernel's group commit) while steps still queue for a worker. A `copy` rule
# (bench/copy_throughput.py, 2 cores) on a disk whose flush takes 2 ms (modelled): 0.87x the
# durable loop's files/s with 4, 0.99-1.06x with 8; with a 0.5 ms flush the same with both.
# On a disk whose flushes cost nothing (this VM's) 8 cost 2-5% (more threads hand the
# interpreter lock over more often): a PC's disk is the one that counts.
PHASES_PER_WORKER = 8


class Scheduler:
    def __init__(
        self,
        runner: JobRunner,
        settings: Settings,
        wake: threading.Event,
        room: Room,
        deaths: ThreadDeaths,
    ) -> None:
        self.runner = runner
        self.settings = settings
        self.wake = wake
        self.room = (
            room  # while it is paused, no phase starts; a phase that finds no room pauses it
        )
        self.deaths = deaths
        self._cond = threading.Condition()  # guards the sets below
        self._active: set[str] = set()
        self._ready = ReadySet(settings.swap_bound)
        # the models of the steps the accelerator lanes run now (several lanes: a cluster)
        self._serving: Counter[str] = Counter()
        # a model the idle accelerator lane may load ahead of the step that needs it
        self._ahead: Preload | None = None
        self._preloading = False
        self._cpu_waiting = 0  # CPU phases queued for a lane thread
        self._cpu_steps = 0  # CPU steps in a worker or waiting for one, or queued for a thread
        self._swaps = 0
        self._stopping = False
        self._throughput = Throughput()
        self._state = StateFile(settings.home, self._snapshot)
        self._cpu = ThreadPoolExecutor(
            settings.cpu_workers * PHASES_PER_WORKER, thread_name_prefix="caixa-cpu"
        )
        # one thread per step the accelerator lane may run at once: one per Ray node, else one
        self._lanes: list[threading.Thread] = []
        self._pools = {
            lane: WorkerPool(lane, size, self._config(lane), settings.keep_alive, self._state.touch)
            for lane, size in ((Resource.cpu, settings.cpu_workers), (Resource.accelerator, 1))
        }
        if ray_pool.enabled(settings.ray_address):  # the cluster's nodes, this machine's worker
            self._pools[Resource.accelerator] = ray_pool.RayPool(
                Resource.accelerator,
                settings.ray_address,
                self._config(Resource.accelerator),
                settings.keep_alive,
                self._state.touch,
                local=self._pools[Resource.accelerator],
                resource=settings.ray_resource,
                local_steps=frozenset(settings.ray_local_steps),
                on_grow=self._open_lanes,
            )
        self._runs = {lane: self._runner_for(lane) for lane in Resource}

    def start(self) -> None:
        """Open the accelerator lane and show the lanes; once this daemon holds its home."""
        self._open_lanes()
        self._state.start()

    def _open_lanes(self) -> None:
        """As many accelerator lane threads as its pool takes steps at once (Ray nodes join)."""
        slots = self._pools[Resource.accelerator].slots
        with self._cond:
            while len(self._lanes) < slots and not self._stopping:
                lane = threading.Thread(
                    target=self._accelerate,
                    name=f"caixa-accelerator-{len(self._lanes)}",
                    daemon=True,
                )
                lane.start()
                self._lanes.append(lane)

    def _config(self, lane: Resource) -> WorkerConfig:
        """CPU workers share the cores; the accelerator worker, when it runs on the CPU, keeps
        to its own share of them, so CPU steps still move while a model works."""
        cores = len(os.sched_getaffinity(0))
        accelerator = lane is Resource.accelerator
        threads = (
            self.settings.accelerator_threads or max(1, cores // 2)
            if accelerator
            else max(1, cores // self.settings.cpu_workers)
        )
        return WorkerConfig(
            lane=lane,
            device=self.settings.device if accelerator else "cpu",
            threads=min(threads, cores),
            pin=accelerator,
            model_memory=self.settings.model_memory_mb * 2**20,
            log={
                "fmt": self.settings.log_format,
                "level": self.settings.log_level,
                "journal_socket": self.settings.journal_socket,
            },
            sys_path=list(sys.path),
        )

    def submit(self, job_id: str) -> None:
        """Start a job unless it is already in flight; it then runs phase after phase."""
        with self._cond:
            if job_id in self._active or self._stopping:
                return
            self._active.add(job_id)
        try:
            job = self.runner.journal.get(job_id)
            following = self.runner.next_of(job)
        except Exception:  # the next journal poll takes the job again
            logger.exception("cannot queue job", job=job_id)
            self._done(job_id)
            return
        self._look_ahead(job)
        self._route(job_id, following)

    def _look_ahead(self, job: Job) -> None:
        """While the accelerator lane has nothing to do, let it load the model that a new job
        will reach: the job's CPU steps run meanwhile, and its model step then waits neither
        for the worker to start nor for the load (a second or more). Not on a cluster, whose
        nodes load what they are sent, nor with no keep-alive (the model would leave at once).
        Best effort: whatever goes wrong here, the step loads its model itself."""
        pool = self._pools[Resource.accelerator]
        if isinstance(pool, ray_pool.RayPool) or not self.settings.keep_alive:
            return
        try:
            coming = self.runner.coming(job) if self._lane_idle() else None
        except Exception as exc:  # an odd plan: its own phases say what is wrong with it
            logger.warning("cannot look ahead", job=job.id, error=str(exc))
            return
        if coming is None or coming.model in pool.held():
            return
        with self._cond:
            if self._lane_idle():
                self._ahead = coming
                self._cond.notify_all()
        self._open_lanes()

    def _lane_idle(self) -> bool:
        """Nothing for the accelerator lane to run, load or choose from (under the lock or not:
        a guess that the caller checks again under it)."""
        return not (
            self._ahead or self._preloading or self._serving or len(self._ready) or self._stopping
        )

    def _route(self, job_id: str, following: Next | None) -> None:
        """Hand the job's next phase to its lane; None: the job is finished or waits."""
        if following is None or self._stopping:
            self._done(job_id)
        elif following.lane is Resource.accelerator:
            try:
                waiting = self.runner.waiting(job_id)
            except Exception:  # as in _advance: the next journal poll takes the job again
                logger.exception("cannot queue job for the accelerator", job=job_id)
                self._done(job_id)
                return
            with self._cond:
                self._ready.add(waiting)
                self._cond.notify_all()
            self._open_lanes()
            self._state.touch()
        else:
            with self._cond:
                self._cpu_waiting += 1
                self._cpu_steps += following.step
            try:
                self._cpu.submit(self._work, job_id, following.step)
            except RuntimeError:  # the lane shut down while stopping; the job resumes next start
                with self._cond:
                    self._cpu_waiting -= 1
                    self._cpu_steps -= following.step
                self._done(job_id)

    def _work(self, job_id: str, step: bool) -> None:
        """Run the job's phases while they stay on the CPU lane, then hand it on. The pool
        keeps what a task raises to itself, so whatever escapes is recorded here: the job is
        let go (the next journal poll takes it again) and the watchdog stops."""
        with self._cond:
            self._cpu_waiting -= 1
        try:
            try:  # a claim's check, then its CPU step: counted until that runs (_cpu_step)
                following = self._advance(job_id, Resource.cpu)
            finally:
                with self._cond:
                    self._cpu_steps -= step
            while following and following.lane is Resource.cpu and not self._stopping:
                following = self._advance(job_id, Resource.cpu)
            self._route(job_id, following)
        except Exception as exc:
            self.deaths.record(threading.current_thread().name, exc)
            self._done(job_id)

    def _accelerate(self) -> None:
        """The accelerator lane: one step at a time, the next one chosen by the policy."""
        pool = self._pools[Resource.accelerator]
        while True:
            with self._cond:
                chosen = None
                while not self._stopping and (chosen := self._take(pool)) is None:
                    if self._ahead is not None:
                        break
                    self._cond.wait()  # a step arrives, or another lane's step ends
                if self._stopping:
                    return
                ahead, self._ahead = self._ahead, None  # a step that is ready loads its own
                self._preloading = chosen is None
                if chosen is not None:
                    # a cluster runs steps side by side on its nodes, not as one batch
                    clustered = isinstance(pool, ray_pool.RayPool)
                    along = [] if clustered else self._ready.take_like(chosen)
                    serving = Counter([chosen.model] if chosen.model else [])
                    self._serving += serving
            if chosen is None:
                assert ahead is not None
                self._preload(pool, ahead)
                continue
            try:
                if along:
                    self._advance_together([chosen.job_id, *(w.job_id for w in along)])
                else:
                    self._route(chosen.job_id, self._advance(chosen.job_id, Resource.accelerator))
            except Exception as exc:  # the lane goes on; the jobs are taken again at next poll
                self.deaths.record(threading.current_thread().name, exc)
                for job_id in (chosen.job_id, *(w.job_id for w in along)):
                    self._done(job_id)
            finally:
                with self._cond:
                    self._serving -= serving
                    self._cond.notify_all()

    def _preload(self, pool: WorkerPool, ahead: Preload) -> None:
        """Load a model ahead on the lane's worker (`_look_ahead`): for every core first, what
        a model step gets once the CPU work is done (a step that takes a new count per call
        keeps a session per count), then for the share, which it gets while CPU work goes on,
        unless a step is ready by then. A step that becomes ready meanwhile waits for the
        load, which it would otherwise make itself."""
        every = None if self.settings.accelerator_threads else len(os.sched_getaffinity(0))
        try:
            for threads in dict.fromkeys((every, None)):
                with self._cond:
                    if self._stopping or len(self._ready):
                        break
                timeout = ahead.timeout or self.settings.step_timeout
                reply = pool.preload(replace(ahead, threads=threads), timeout)
                if reply is None:
                    break
                self._loaded(reply, ahead=True)
        finally:
            with self._cond:
                self._preloading = False
                self._cond.notify_all()
            self._state.touch()

    def _take(self, pool: WorkerPool) -> Waiting | None:
        """The next step for this lane (under the lock), given what the workers hold and
        the models the other lanes are running (several lanes: a Ray cluster's nodes)."""
        serving = set(self._serving)
        return self._ready.take(pool.resident(spoken_for=serving), pool.held(), serving)

    def _advance_together(self, job_ids: list[str]) -> None:
        """Advance jobs whose next steps run as one batch, then route each."""
        gather = _Gather(job_ids, self._run_batch)

        def advance(job_id: str) -> Next | None:
            try:
                return self._advance(job_id, Resource.accelerator, gather.run)
            finally:
                gather.leave(job_id)

        with ThreadPoolExecutor(len(job_ids), thread_name_prefix="caixa-batch") as threads:
            following = list(threads.map(advance, job_ids))
        for job_id, after in zip(job_ids, following, strict=True):
            self._route(job_id, after)

    def _run_batch(self, tasks: list[Task]) -> dict[str, Reply | Exception]:
        """Each task's reply, from one Batch; when the batch itself fails (its worker died or
        it ran over the sum of its tasks' limits), each task again alone, so that only the
        one at fault fails."""
        run = self._runs[Resource.accelerator]
        if len(tasks) > 1:
            limit = sum(t.timeout or self.settings.step_timeout for t in tasks)
            try:
                reply = run(Batch(tuple(tasks)), limit)
                return {t.job.job_id: r for t, r in zip(tasks, reply.each, strict=True)}
            except Exception as exc:
                logger.warning("a batch failed; its steps run one by one", error=str(exc))
        found: dict[str, Reply | Exception] = {}
        for task in tasks:
            try:
                found[task.job.job_id] = run(task, None)
            except Exception as exc:
                found[task.job.job_id] = exc
        return found

    def _advance(
        self, job_id: str, lane: Resource, run: Callable[[Task], Reply] | None = None
    ) -> Next | None:
        """Run the job's next phase, unless the daemon waits for room to write. A phase that
        finds no room (a full disk, a read-only remount: in a step, a publish, or the journal's
        own commit) pauses the daemon and leaves the job as the journal last recorded it; the
        next journal poll after the pause takes it again, with no attempt counted."""
        if self.room.paused:
            return None
        try:
            return self.runner.advance(job_id, run or self._runs[lane])
        except Draining:  # the daemon stops: the job resumes at the next start
            return None
        except Exception as exc:
            if is_no_room(exc):
                self.room.failed(exc)
                self.wake.set()  # the daemon's loop says so at once
                return None
            # Anything else: the job stays unfinished and the next poll picks it up again.
            logger.exception("job phase crashed", job=job_id)
            return None

    def _threads(self) -> int | None:
        """The threads for the accelerator step its worker takes now (once it is up: one that
        starts first takes a second or more): every core while no CPU step runs, waits for a
        worker or is queued for a lane thread (and no count is set for it); None: the worker's
        share. A claim's check, a publish or a settle is brief file work, running or queued: a
        stream of model jobs keeps every core while each one's publish runs beside the next
        one's step, and a batch's publishes do not halve the next batch."""
        if self.settings.accelerator_threads:
            return None
        with self._cond:
            idle = not self._cpu_steps
        return len(os.sched_getaffinity(0)) if idle else None

    def _runner_for(self, lane: Resource) -> Callable[..., Reply]:
        pool = self._pools[lane]
        budget = self._threads if lane is Resource.accelerator else None

        def run(task: Task | Batch, limit: float | None = None) -> Reply:
            started = time.monotonic()
            if isinstance(task, Batch):
                reply = pool.run(task, limit or self.settings.step_timeout, budget)
                seconds = (time.monotonic() - started) / len(task.tasks)
                for t in task.tasks:
                    self._throughput.record(t.step, seconds)
            else:
                with self._cpu_step(lane):
                    reply = self._run_one(lane, task, budget)
                self._throughput.record(task.step, time.monotonic() - started)
            if lane is Resource.accelerator:
                self._loaded(reply)
            return reply

        return run

    def _loaded(self, reply: Reply, **extra: Any) -> None:
        """Count and log the models an accelerator worker's reply says it loaded."""
        if not reply.loaded:
            return
        self._swaps += len(reply.loaded)
        logger.info(
            "model loaded",
            models=reply.loaded,
            resident=[r.name for r in reply.resident],
            swaps=self._swaps,
            **({"gpu_mb": round(reply.gpu_bytes / 2**20)} if reply.gpu_bytes else {}),
            **extra,
        )

    @contextlib.contextmanager
    def _cpu_step(self, lane: Resource) -> Iterator[None]:
        """Count a CPU step while it runs or waits for a worker: the accelerator's budget."""
        counts = lane is Resource.cpu
        if counts:
            with self._cond:
                self._cpu_steps += 1
        try:
            yield
        finally:
            if counts:
                with self._cond:
                    self._cpu_steps -= 1

    def _run_one(self, lane: Resource, task: Task, budget: Budget | None) -> Reply:
        """A step on its lane's pool; a CPU step whose rule says `cluster: true` on an idle
        node of the cluster, when the accelerator lane has one."""
        timeout = task.timeout or self.settings.step_timeout
        pool, cluster = self._pools[lane], self._pools[Resource.accelerator]
        if lane is Resource.cpu and task.cluster and isinstance(cluster, ray_pool.RayPool):
            return cluster.run(task, timeout, here=pool)
        return pool.run(task, timeout, budget)

    def _done(self, job_id: str) -> None:
        with self._cond:
            self._active.discard(job_id)
        self._state.touch()
        self.wake.set()

    def busy(self) -> int:
        with self._cond:
            return len(self._active)

    def _snapshot(self) -> dict[str, Any]:
        with self._cond:
            by_model, cpu_waiting = self._ready.by_model(), self._cpu_waiting
        pool = self._pools[Resource.accelerator]
        return {
            **({"cluster": pool.cluster()} if isinstance(pool, ray_pool.RayPool) else {}),
            "device": self.settings.device,
            "keep_alive": self.settings.keep_alive,
            "swap_bound": self.settings.swap_bound,
            "lanes": {
                "accelerator": {
                    "workers": self._pools[Resource.accelerator].view(),
                    "waiting": by_model,
                    "swaps": self._swaps,
                },
                "cpu": {"workers": self._pools[Resource.cpu].view(), "waiting": cpu_waiting},
            },
            "steps": self._throughput.summary(),
            "paused": self.room.paused,
            "room": {"paths": [str(p) for p in self.room.paths()], "min_free": self.room.min_free},
            "log_records_dropped": log.dropped(),
        }

    def stalled(self) -> str | None:
        """Why a lane does not answer, or None; the daemon pets systemd's watchdog only while
        None. A worker is stopped at its step's time limit, so one still busy well past it
        means the lane itself is stuck."""
        if not all(lane.is_alive() for lane in self._lanes) and not self._stopping:
            return "an accelerator lane's thread has died"
        now = time.time()
        for worker in (w for pool in self._pools.values() for w in pool.workers):
            if worker.busy is not None:
                task, since = worker.busy
                limit = (task.timeout or self.settings.step_timeout) + self.settings.stall_seconds
                if now - since > limit:
                    return f"worker {worker.name} has run {task.step} for {now - since:.0f} s"
        return None

    def stop(self, grace: float | None = None) -> bool:
        """Take no new phase; let running ones finish within `grace` seconds (None: however
        long). False when some still run: the caller leaves without waiting for them (their
        workers end with the daemon) and their jobs resume at the next start."""
        with self._cond:
            self._stopping = True
            preloading = self._preloading
            self._cond.notify_all()
        if preloading:  # a load ahead no step waits for: its worker ends, as at close
            for worker in self._pools[Resource.accelerator].workers:
                worker.kill()
        self._pools[Resource.cpu].drain()  # phases waiting for a CPU worker start no step
        logger.debug("no new step starts")
        deadline = None if grace is None else time.monotonic() + grace
        for lane in self._lanes:
            lane.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        closing = threading.Thread(
            target=self._cpu.shutdown, kwargs={"cancel_futures": True}, daemon=True
        )
        closing.start()
        closing.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(lane.is_alive() for lane in self._lanes) or closing.is_alive():
            return False
        for pool in self._pools.values():
            pool.close()
        self._state.close()
        return True


class _Gather:
    """The tasks of the jobs of one batch, collected from their threads and run in one call
    once every job has handed its task over or finished its phase without one (its state
    had moved on); each thread then gets its own reply, or its own failure."""

    def __init__(
        self, job_ids: list[str], run: Callable[[list[Task]], dict[str, Reply | Exception]]
    ) -> None:
        self._run = run
        self._cond = threading.Condition()
        self._pending = set(job_ids)
        self._tasks: list[Task] = []
        self._replies: dict[str, Reply | Exception] | None = None

    def run(self, task: Task) -> Reply:
        with self._cond:
            self._tasks.append(task)
        self._arrived(task.job.job_id)
        with self._cond:
            while self._replies is None:
                self._cond.wait()
            reply = self._replies[task.job.job_id]
        if isinstance(reply, Exception):
            raise reply
        if reply.failure is not None:
            raise RemoteStepError(reply.failure)
        return reply

    def leave(self, job_id: str) -> None:
        """A job's phase is over; if it never handed a task, the batch need not wait for it."""
        self._arrived(job_id)

    def _arrived(self, job_id: str) -> None:
        with self._cond:
            if job_id not in self._pending:
                return
            self._pending.discard(job_id)
            if self._pending or not self._tasks:
                return
            tasks = list(self._tasks)
        try:
            replies = self._run(tasks)
        except Exception as exc:  # the lane itself failed: every job's phase fails as one
            replies = {t.job.job_id: exc for t in tasks}
        with self._cond:
            self._replies = replies
            self._cond.notify_all()
