"""Model steps on a Ray cluster: a pool with WorkerPool's face whose workers are long-lived Ray
actors, one per node that offers the lane's resource, each holding the same `Worker` that a
local worker process holds (models, memory budget, out-of-memory ladder, keep-alive).

Only a step's `run` leaves this machine. Nodes need not share a disk: the step's inputs (the
claimed source and the job's earlier artifacts) travel as bytes through Ray's object store, the
files the step made come back the same way and are written into the job's step folder here, so
the journal and publishing never know. A step's result is recorded only when it returns, so a
node that dies costs only the steps it held: they fail as a dead worker's would, and the journal
retries them, elsewhere, or on the local worker when no node can take them. A cluster that
cannot be reached, or goes away, leaves the local worker to do the work; the lanes file says so.
caixa tries again, less and less often, until it answers, and then sends it steps again.

The Ray driver lives in the daemon: caixa's machine runs the Ray head (or joins the cluster as
a node), and `ray.init` finds it there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from caixa import log, models
from caixa.daemon.worker.pool import (
    StepTimeoutError,
    WorkerDiedError,
    WorkerPool,
    _overran,
    holds,
    work_view,
)
from caixa.daemon.worker.protocol import (
    Budget,
    RemoteStepError,
    Reply,
    Task,
    WorkerConfig,
    describe,
    thread_env,
    with_threads,
)
from caixa.errors import StepError
from caixa.pipelines.base import Artifact

logger = log.get("caixa.ray")
NAMESPACE = "caixa"
CONNECT_TIMEOUT = 60.0  # seconds `ray.init` may take before caixa goes on locally
KNOCK_TIMEOUT = 5.0  # seconds a TCP connection to the head's port may take
RETRY_FIRST, RETRY_MOST = 5.0, 30.0  # seconds between tries to reach the cluster: doubling
LOOK_EVERY = 2.0  # seconds between looks at the cluster's nodes
GONE_AFTER = 15.0  # seconds without an answer from the cluster before it counts as gone
WAIT_STEP = 1.0  # seconds between looks at a running step's node
ACTOR_START = 120.0  # seconds an actor may take to start (it may import torch)
BENCH = 30.0  # seconds a node whose worker was lost waits for a new one (it may be leaving)


def enabled(address: str) -> bool:
    return bool(address.strip())


# --- what travels -------------------------------------------------------------------------


@dataclass(frozen=True)
class Parcel:
    """A step and its input files, for a node that shares no disk with this machine."""

    task: Task
    files: dict[str, bytes]  # name under the node's job folder -> content


@dataclass(frozen=True)
class Return:
    """A step's reply and the files it made (by name under its workdir), or why the node
    cannot run it at all (`lacking`: the step's extra or model is not installed there)."""

    reply: Reply = field(default_factory=Reply)
    files: dict[str, bytes] = field(default_factory=dict)
    lacking: str | None = None


def pack(task: Task) -> tuple[Parcel, dict[str, Path]]:
    """The parcel, and where each of its files lives here (to map unchanged inputs back)."""
    job = task.job
    local = {f"source/{job.source.name}": job.source}
    for i, artifact in enumerate(job.artifacts):
        local[f"in/{i}/{artifact.path.name}"] = artifact.path
    files = {name: path.read_bytes() for name, path in local.items()}
    return Parcel(task, files), local


def unpack(parcel: Parcel, root: Path, home: Path) -> Task:
    """Write the parcel's files under `root` (the node's folder for this step) and point the
    task at them; the step's workdir is `root/work`, empty."""
    shutil.rmtree(root, ignore_errors=True)
    for name, content in parcel.files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (root / "work").mkdir(parents=True)
    job = parcel.task.job
    artifacts = tuple(
        replace(a, path=root / f"in/{i}/{a.path.name}") for i, a in enumerate(job.artifacts)
    )
    moved = replace(
        job,
        source=root / f"source/{job.source.name}",
        artifacts=artifacts,
        workdir=root / "work",
        home=home,
    )
    return replace(parcel.task, job=moved)


def gather(reply: Reply, root: Path) -> Return:
    """The node's answer: the reply, with its artifacts named relative to the step's folder,
    and the bytes of every file the step made."""
    work = root / "work"
    files = {str(p.relative_to(work)): p.read_bytes() for p in work.rglob("*") if p.is_file()}
    if reply.result is None:
        return Return(reply, {})
    artifacts = []
    for i, a in enumerate(reply.result.artifacts):
        path = Path(a.path)
        if path.is_relative_to(work):
            artifacts.append(replace(a, path=Path("work") / path.relative_to(work)))
        elif path.is_relative_to(root):  # an input handed on unchanged
            artifacts.append(replace(a, path=path.relative_to(root)))
        else:  # made elsewhere on the node: it travels like the rest
            name = f".elsewhere/{i}/{path.name}"
            files[name] = path.read_bytes()
            artifacts.append(replace(a, path=Path("work") / name))
    return Return(replace(reply, result=replace(reply.result, artifacts=artifacts)), files)


def land(back: Return, task: Task, local: dict[str, Path]) -> Reply:
    """Write what the node made into the step's folder here; the reply's artifacts point at
    those files (or at the inputs they came from), as a local worker's would."""
    workdir = task.job.workdir
    for name, content in back.files.items():
        path = workdir / name
        if not path.resolve().is_relative_to(workdir.resolve()):
            raise StepError(f"a node sent back a file outside the step's folder: {name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    reply = back.reply
    if reply.result is None:
        return reply
    artifacts: list[Artifact] = []
    for a in reply.result.artifacts:
        rel = str(a.path)
        if rel.startswith("work/"):
            artifacts.append(replace(a, path=workdir / rel.removeprefix("work/")))
        else:
            artifacts.append(replace(a, path=local[rel]))
    return replace(reply, result=replace(reply.result, artifacts=artifacts))


# --- the node's side ------------------------------------------------------------------------


class NodeWorker:
    """The Ray actor: a `Worker` (child.py) on a node, and a folder there for its steps."""

    def __init__(self, config: WorkerConfig) -> None:
        from caixa import offline
        from caixa.daemon.worker.child import Worker

        # plugins found where the daemon finds them, where those folders exist here too
        sys.path[:0] = [p for p in config.sys_path if p not in sys.path and Path(p).is_dir()]
        threads = config.threads or len(os.sched_getaffinity(0))
        os.environ.update(thread_env(threads))
        offline.enforce()
        log.configure(**config.log)
        self.root = Path(tempfile.mkdtemp(prefix="caixa-ray-"))
        self.home = self.root / "home"
        self.home.mkdir()
        self.error: str | None = None
        self.done: float | None = None  # how far the running step says it is
        try:
            self.worker = Worker(replace(config, threads=threads), send=self._heard)
        except Exception as exc:  # a device asked for that this node lacks
            self.error = describe(exc)

    def hello(self) -> dict[str, Any]:
        import socket

        worker = getattr(self, "worker", None)
        return {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "device": worker.device if worker else None,
            "threads": worker.config.threads if worker else None,
            "model_memory": worker.budget if worker else None,
            "error": self.error,
        }

    def _heard(self, message: Any) -> None:
        self.done = message.done  # the Worker sends only Progress here

    def progress(self) -> float | None:
        return self.done

    def run(self, parcel: Parcel) -> Return:
        self.done = None
        try:
            return self._run(parcel)
        finally:
            self.done = None  # the next step starts from nothing

    def _run(self, parcel: Parcel) -> Return:
        from caixa.pipelines.registry import default_registry

        task = parcel.task
        lacking = default_registry().availability(task.step).reason
        if lacking is None and task.model in models.PACKAGED:
            try:
                models.locate(task.model)
            except models.ModelNotFoundError as exc:
                lacking = str(exc)
        if lacking is not None:
            return Return(lacking=lacking)
        if self.error:
            return Return(lacking=self.error)
        root = self.root / "steps" / f"{task.job.job_id}-{os.getpid()}"
        try:
            moved = unpack(parcel, root, self.home)
            return gather(self.worker.handle(moved), root)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def unload(self, names: list[str] | None) -> Reply:
        from caixa.daemon.worker.protocol import Unload

        return self.worker.handle(Unload(names))


# --- the daemon's side ----------------------------------------------------------------------


class RayWorker:
    """One node's actor, with WorkerProcess's face (run, unload, kill, view, busy, reply)."""

    def __init__(
        self, node: dict[str, Any], lane: str, config: WorkerConfig, on_change: Callable[[], None]
    ) -> None:
        self.node_id: str = node["NodeID"]
        self.address: str = node["NodeManagerAddress"]
        self.resources: dict[str, float] = dict(node.get("Resources", {}))
        self.name = f"{lane}@{self.address}/{self.node_id[:8]}"
        self.lane = lane
        self.config = config
        self.on_change = on_change
        self.busy: tuple[Task, float] | None = None
        self.progress: float | None = None  # how far the busy step is, asked for while it runs
        self.reply = Reply()
        self.started = 0
        self.hello: dict[str, Any] | None = None
        self.actor: Any = None
        self.dead = False  # its node left, or its actor cannot be started again
        self.lacks: dict[str, str] = {}  # step or model -> why this node cannot run it

    @property
    def pid(self) -> int | None:
        return self.hello["pid"] if self.hello else None

    def can(self, task: Task) -> bool:
        return not self.dead and task.step not in self.lacks and task.model not in self.lacks

    def run(self, task: Task, timeout: float, budget: Budget | None = None) -> Reply:
        import ray

        self._ensure()
        task = with_threads(task, budget)
        parcel, local = pack(task)
        self.busy, self.progress = (task, time.time()), None
        self.on_change()
        try:
            back: Return = self._wait(self.actor.run.remote(parcel), timeout, asking=True)
        except TimeoutError:
            self.kill()
            raise StepTimeoutError(_overran(task, timeout)) from None
        except ray.exceptions.RayError as exc:
            self.kill()
            raise WorkerDiedError(self._lost(exc)) from None
        finally:
            self.busy = self.progress = None
        if back.lacking is not None:
            raise Lacking(back.lacking)
        self.reply = back.reply
        reply = land(back, task, local)
        if reply.failure is not None:
            raise RemoteStepError(reply.failure)
        return replace(
            reply, notes=[*reply.notes, f"ran on Ray node {self.address} {self.node_id[:8]}"]
        )

    def unload(self, names: list[str]) -> None:
        import ray

        if self.actor is None:
            return
        try:
            self.reply = self._wait(self.actor.unload.remote(names), 60.0)
        except ray.exceptions.RayError as exc:
            self.kill()
            raise WorkerDiedError(self._lost(exc)) from None

    def _ensure(self) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if self.actor is not None:
            return
        gpus = 1 if self.resources.get("GPU", 0) >= 1 and self.lane == "accelerator" else 0
        self.actor = (
            _actor_class()
            .options(
                num_cpus=0,
                num_gpus=gpus,
                max_restarts=0,
                max_concurrency=3,  # an unload, and a question of progress, while a step runs
                scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False),
            )
            .remote(self.config)
        )
        self.started += 1
        try:
            self.hello = self._wait(self.actor.hello.remote(), ACTOR_START)
        except (TimeoutError, ray.exceptions.RayError) as exc:
            self.kill()
            self.dead = True
            raise NotStartedError(f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        logger.info(
            "ray worker started",
            worker=self.name,
            node=self.address,
            pid=self.pid,
            device=self.hello["device"],
        )

    def _wait(self, ref: Any, timeout: float, asking: bool = False) -> Any:
        """ray.get, a second at a time, so a node that leaves is noticed while it works (and,
        `asking`, how far its step is)."""
        import ray

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            try:
                return ray.get(ref, timeout=min(WAIT_STEP, left))
            except ray.exceptions.GetTimeoutError:
                if self.dead:
                    raise WorkerDiedError(
                        f"node {self.address} left the Ray cluster while running this step"
                    ) from None
                if asking:
                    self._ask_progress(min(WAIT_STEP, max(0.1, deadline - time.monotonic())))

    def _ask_progress(self, timeout: float) -> None:
        import ray

        with contextlib.suppress(ray.exceptions.RayError):  # a view only; run's wait decides
            done = ray.get(self.actor.progress.remote(), timeout=timeout)
            if done != self.progress:
                self.progress = done
                self.on_change()

    def _lost(self, exc: BaseException) -> str:
        self.dead = True
        return (
            f"the Ray worker on node {self.address} running this step was lost"
            f" ({type(exc).__name__}: the node left, or its worker was killed)"
        )

    def kill(self) -> int | None:
        import ray

        actor, self.actor = self.actor, None
        if actor is not None:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
            logger.info("ray worker stopped", worker=self.name, node=self.address)
        self.hello = None
        self.reply = Reply()
        return None

    def view(self) -> dict[str, Any]:
        hello = self.hello or {}
        return {
            "name": self.name,
            "node": self.address,
            "node_id": self.node_id,
            "resources": self.resources,
            "pid": self.pid,
            "device": hello.get("device"),
            "threads": hello.get("threads") or 0,
            "model_memory": hello.get("model_memory"),
            **work_view(self.busy, self.reply, self.started, self.progress),
            "lacks": self.lacks,
        }


class Lacking(Exception):  # noqa: N818  (a node's answer, not an error of the step)
    """The node cannot run this step: its extra or model is not installed there."""


class NotStartedError(Exception):
    """The node's worker did not start (its node is leaving): the step was never sent."""


class RayPool(WorkerPool):
    """The lane's workers on the cluster's nodes; the local pool when none can take a step."""

    def __init__(
        self,
        lane: str,
        address: str,
        config: WorkerConfig,
        keep_alive: float,
        on_change: Callable[[], None],
        local: WorkerPool,
        resource: str,
        local_steps: frozenset[str] = frozenset(),
        on_grow: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(lane, 0, config, keep_alive, on_change)
        self.on_grow = on_grow  # nodes joined: the lane may run more steps at once
        self.address = address
        self.local = local
        self.resource = resource  # what a node offers to serve this lane
        self.local_steps = local_steps  # steps that keep state in caixa's home: never sent out
        self.remote_config = replace(config, threads=0, pin=False)  # the node's own cores
        self.state = "connecting"  # connecting | connected | gone
        self.why: str | None = None
        self._joined = False  # this daemon became the cluster's driver
        self._joining: _Joining | None = None
        self._gcs = address  # the head's address, once connected
        self._cluster = ""  # the id of the cluster joined, once connected
        self._looks = 0  # which look thread may go on: one per connection
        self._lost: str | None = None  # why the connected cluster counts as gone at once
        self._quit = threading.Event()
        self._seen = time.monotonic()
        self._told: set[tuple[str, str]] = set()
        self._benched: dict[str, float] = {}  # node -> until when it gets no new worker
        threading.Thread(target=self._watch, name=f"caixa-ray-{lane}", daemon=True).start()

    @property
    def slots(self) -> int:
        """How many steps the lane may run at once: one per node, at least one."""
        with self._cond:
            return max(1, sum(1 for w in self.workers if not w.dead))

    def run(
        self,
        task: Task,
        timeout: float,
        budget: Budget | None = None,
        here: WorkerPool | None = None,
    ) -> Reply:
        """The step on a node that can take it, waiting for one to be free; `here`: a CPU
        step its rule sends out (`cluster: true`), which takes a node only if one is idle now
        and otherwise runs on `here`, the CPU lane's pool, rather than wait."""
        while True:
            worker = self._lease_for(task, wait=here is None)
            if worker is None:
                return (here or self.local).run(task, timeout, budget)
            try:
                return worker.run(task, timeout, budget)
            except Lacking as exc:
                self._lacks(worker, task, str(exc))
            except NotStartedError as exc:
                logger.warning(
                    "a Ray node's worker did not start", node=worker.address, error=str(exc)
                )
            finally:
                self._give_back(worker)
                self.on_change()

    def _lease_for(self, task: Task, wait: bool = True) -> RayWorker | None:
        """An idle node that can run the task (the one holding its model if any); None when
        the step stays here, no node can take it, or (not `wait`) none is idle now."""
        with self._cond:
            if not self._keeper.is_alive() and not self._closed:
                self._keeper.start()
            while True:
                if self._closed:
                    raise RuntimeError(f"the {self.lane} workers are stopping")
                able = [w for w in self.workers if w.can(task)]
                if task.step in self.local_steps or self.state != "connected" or not able:
                    return None
                idle = [w for w in self._idle if w.can(task)]
                if idle:
                    holding = [w for w in idle if task.model in {r.name for r in w.reply.resident}]
                    worker = (holding or idle)[-1]
                    self._idle.remove(worker)
                    return worker
                if not wait:
                    return None
                self._cond.wait(LOOK_EVERY)

    def _give_back(self, worker: RayWorker) -> None:
        with self._cond:
            if worker.dead:
                if worker in self.workers:
                    self.workers.remove(worker)
                self._benched[worker.node_id] = time.monotonic() + BENCH
            else:
                self._idle.append(worker)
            self._cond.notify_all()

    def _lacks(self, worker: RayWorker, task: Task, why: str) -> None:
        what = task.model if task.model and task.model in why else task.step
        worker.lacks[what] = why
        if (worker.node_id, what) not in self._told:
            self._told.add((worker.node_id, what))
            logger.warning(
                "a Ray node cannot run this step; other nodes or this machine will",
                node=worker.address,
                step=task.step,
                lacking=why,
            )

    # --- the cluster --------------------------------------------------------------------------

    def _watch(self) -> None:
        """Connect, then look at the nodes every few seconds (from a thread of its own: with
        the head gone, asking Ray may block): new nodes get a worker, ones that left lose
        theirs. No answer for a while: the cluster is gone, steps run here, and this daemon
        leaves it and connects again (a head that comes back is a new cluster, whose answers
        to an old driver's questions would end the daemon)."""
        while self._connect():
            self._looks += 1
            threading.Thread(
                target=self._look,
                args=(self._looks,),
                name=f"caixa-ray-{self.lane}-look",
                daemon=True,
            ).start()
            while not self._closed:
                slept = time.monotonic()
                self._quit.wait(LOOK_EVERY)
                if time.monotonic() - slept > GONE_AFTER:  # this process was paused (SIGSTOP,
                    self._seen = time.monotonic()  # docker pause), not the cluster silent
                silent = time.monotonic() - self._seen > GONE_AFTER
                if self._lost or silent:
                    why = self._lost or f"no answer from the Ray cluster for {GONE_AFTER:g} s"
                    self._set("gone", why, None)
                    self._forget_all()
                    self._leave()
                    break

    def _look(self, looks: int) -> None:
        """Ask for the nodes while the head's port answers and the cluster behind it is the one
        this daemon joined: a question asked of a head that is gone waits for it, and Ray ends
        the whole process of a driver whose question a new head answers (a head started again
        between two looks), so a fresh client asks the head which cluster it is first."""
        while not self._closed and looks == self._looks:
            try:
                knock(self._gcs)
            except OSError as exc:
                self._lost = f"the Ray head at {self._gcs} does not answer: {exc}"
                return
            try:
                if _cluster_id(self._gcs) != self._cluster:
                    self._lost = f"the Ray head at {self._gcs} started again: a new cluster"
                    return
                nodes = _nodes()
            except Exception as exc:
                logger.debug("cannot list the Ray nodes", error=str(exc))
            else:
                self._seen = time.monotonic()
                self._place(nodes)
            self._quit.wait(LOOK_EVERY)

    def _leave(self) -> None:
        """Disconnect from a cluster that is gone, once no step waits on it any more."""
        self._looks += 1
        with self._cond:
            while any(w.busy for w in self.workers) and not self._closed:
                self._cond.wait(WAIT_STEP)
        self._joined = False
        disconnect()

    def _connect(self) -> bool:
        """Try until the cluster answers (True) or the daemon stops (False), with a pause that
        doubles up to RETRY_MOST; the log says once that it does not answer."""
        pause = RETRY_FIRST
        while not self._closed:
            why = self._reach()
            if why is None:
                self._joined, self._seen, self._lost = True, time.monotonic(), None
                self._gcs, self._cluster = _gcs_address(self.address), _joined_cluster_id()
                self._set("connected", None, "connected to the Ray cluster")
                return True
            if self.state == "gone":
                self.why = why
                self.on_change()
            else:
                self._set("gone", why, None)
            self._quit.wait(pause)
            pause = min(2 * pause, RETRY_MOST)
        return False

    def _reach(self) -> str | None:
        """Why the cluster cannot be joined now, or None once this daemon is its driver."""
        try:
            knock(self.address)
        except OSError as exc:
            return f"cannot reach it: {exc}"
        joining = self._joining = self._joining or _Joining(self.address)
        joining.thread.join(CONNECT_TIMEOUT)
        if joining.thread.is_alive():  # waited on again at the next try, never doubled
            return f"no answer in {CONNECT_TIMEOUT:g} s"
        self._joining = None
        if joining.error is not None:
            disconnect()  # nothing half made is left for the next try
            return f"cannot join it: {joining.error}"
        return None

    def _set(self, state: str, why: str | None, news: str | None) -> None:
        self.state, self.why = state, why
        if why:
            logger.warning("model steps run on this machine", why=why, address=self.address)
        if news:
            logger.info(news, address=self.address)
        self.on_change()
        with self._cond:
            self._cond.notify_all()

    def _place(self, nodes: list[dict[str, Any]]) -> None:
        alive = {n["NodeID"]: n for n in nodes if n.get("Alive")}
        offering = {i: n for i, n in alive.items() if n["Resources"].get(self.resource, 0) >= 1}
        changed = grew = False
        with self._cond:
            for worker in list(self.workers):
                if worker.node_id not in offering:
                    worker.dead = True  # a step still waiting on it gives up at its next look
                    if worker in self._idle:
                        self._idle.remove(worker)
                        self.workers.remove(worker)
                    changed = True
            now = time.monotonic()
            known = {w.node_id for w in self.workers}
            known |= {n for n, until in self._benched.items() if until > now}
            for node_id, node in offering.items():
                if node_id not in known:
                    worker = RayWorker(node, self.lane, self.remote_config, self.on_change)
                    self.workers.append(worker)
                    self._idle.insert(0, worker)
                    changed = True
                    logger.info("ray node joined", node=worker.address, resources=worker.resources)
                    grew = True
            self._cond.notify_all()
        if changed:
            self.on_change()
        if grew:
            self.on_grow()

    def _forget_all(self) -> None:
        with self._cond:
            for worker in self.workers:
                worker.dead = True
            self.workers = [w for w in self.workers if w not in self._idle]
            self._idle = []
            self._cond.notify_all()

    # --- WorkerPool's face ----------------------------------------------------------------------

    def held(self) -> set[str]:
        return super().held() | self.local.held()

    def resident(self, spoken_for: Collection[str] = ()) -> set[str]:
        """The models the next step may find loaded: those on the idle nodes that hold none of
        `spoken_for` (another lane's step goes to the node that has its model), and this
        machine's worker's; a busy node's are no use to it."""
        with self._cond:
            free = [w for w in self._idle if not holds(w.reply, spoken_for)]
        return {r.name for w in free for r in w.reply.resident} | self.local.resident(spoken_for)

    def view(self) -> list[dict[str, Any]]:
        return [*super().view(), *self.local.view()]

    def cluster(self) -> dict[str, Any]:
        """The cluster as `caixa status` and `caixa doctor` show it."""
        with self._cond:
            workers = list(self.workers)
        return {
            "address": self.address,
            "state": self.state,
            "why": self.why,
            "nodes": [w.view() for w in workers],
        }

    def close(self) -> None:
        self._quit.set()
        super().close()
        self.local.close()
        if self._joined:
            disconnect()


class _Joining:
    """One `ray.init`, on a thread of its own: it may hang (a port that answers, but no Ray
    head behind it), and Ray allows only one at a time."""

    def __init__(self, address: str) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=self._run, args=(address,), name="caixa-ray-connect", daemon=True
        )
        self.thread.start()

    def _run(self, address: str) -> None:
        try:
            connect(address)
        except BaseException as exc:  # Ray may end a driver it cannot start with SystemExit
            self.error = exc


def knock(address: str) -> None:
    """Open and close a TCP connection to the head's port (OSError: nothing answers), so that
    `ray.init`, which waits minutes for a head that is not there, runs once one is; `auto` is
    left to Ray, which says at once when it finds no cluster."""
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        return
    with socket.create_connection((host.strip("[]"), int(port)), timeout=KNOCK_TIMEOUT):
        pass


def connect(address: str) -> None:
    """Join the cluster as its driver. Ray starts nothing here (no dashboard, no node): the
    cluster runs already, and this machine is one of its nodes."""
    # set before Ray's first import, which reads them:
    # the daemon must outlive a head that goes away: Ray would end its driver after a minute
    os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", str(10 * 365 * 86400))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # SIGTERM is the daemon's own (a drained stop): Ray's handler, put in again by a second
    # `ray.init` once a head came back, would end the process at once
    os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")
    import ray

    ray.init(
        address=address,
        namespace=NAMESPACE,
        log_to_driver=False,
        configure_logging=False,
        ignore_reinit_error=True,
    )


def disconnect() -> None:
    import ray

    thread = threading.Thread(target=ray.shutdown, name="caixa-ray-shutdown", daemon=True)
    thread.start()
    thread.join(10.0)


def _gcs_address(given: str) -> str:
    """The head's host:port as the driver found it (`auto` names none), else `given`."""
    import ray

    try:
        return str(ray.get_runtime_context().gcs_address)
    except Exception:
        return given


def _joined_cluster_id() -> str:
    """The id of the cluster this driver joined (Ray has no public name for it)."""
    import ray

    return str(ray._private.worker.global_worker.node.cluster_id.hex())


def _cluster_id(gcs: str) -> str:
    """The id of the cluster whose head answers at `gcs` now, asked through a client of its
    own: the driver's client, reconnected to a new head, would end the process."""
    from ray._raylet import GcsClient

    return str(GcsClient(address=gcs).cluster_id.hex())


def _nodes() -> list[dict[str, Any]]:
    import ray

    return ray.nodes()


@cache
def _actor_class() -> Any:
    import ray

    return ray.remote(NodeWorker)
