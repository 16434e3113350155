"""What travels between caixa and a Ray node, without a cluster: the node's actor class is a
plain class, so a step packed here, run by it in another folder (as on a node with no shared
disk) and landed back gives the same files as the same step run by a local worker; a node
without the step says so instead of failing the job."""

from __future__ import annotations

from pathlib import Path

from caixa.daemon.worker.child import Worker
from caixa.daemon.worker.protocol import Task
from caixa.daemon.worker.ray_pool import NodeWorker, land, pack
from caixa.pipelines.base import Artifact, StepInput
from tests.workers import WORKER_CONFIG


def task(root: Path, step: str, params: dict[str, object] | None = None) -> Task:
    source = root / "source" / "notes.txt"
    source.parent.mkdir(parents=True)
    source.write_text("first line\nsecond line\n")
    earlier = root / "0" / "notes.slept.txt"
    earlier.parent.mkdir()
    earlier.write_text("notes.txt\n")
    workdir = root / "1"
    workdir.mkdir()
    job = StepInput(
        job_id="j1",
        rule="r",
        source=source,
        source_name="notes.txt",
        media_type="text/plain",
        artifacts=(Artifact("notes.slept.txt", earlier, "text/plain"),),
        workdir=workdir,
        home=root / "home",
    )
    return Task(step, params or {}, job, None)


def test_a_step_run_on_a_node_lands_the_same_files_as_a_local_run(tmp_path: Path) -> None:
    here = task(tmp_path / "here", "copy")
    local = Worker(WORKER_CONFIG).handle(task(tmp_path / "local", "copy"))
    assert local.result is not None

    parcel, places = pack(here)
    back = NodeWorker(WORKER_CONFIG).run(parcel)  # writes only under its own temporary folder
    assert back.lacking is None
    reply = land(back, here, places)

    assert reply.failure is None and reply.result is not None
    names = [a.name for a in reply.result.artifacts]
    assert names == [a.name for a in local.result.artifacts] == ["notes.txt"]
    made = reply.result.artifacts[0].path
    assert made == here.job.workdir / "source", "in the job's step folder here"
    assert made.read_bytes() == local.result.artifacts[0].path.read_bytes()


def test_a_node_without_the_step_says_so_and_runs_nothing(tmp_path: Path) -> None:
    here = task(tmp_path, "needs_missing")
    parcel, _ = pack(here)
    back = NodeWorker(WORKER_CONFIG).run(parcel)
    assert back.lacking is not None
    assert "caixa_no_such_module" in back.lacking and "caixa[vision]" in back.lacking
    assert back.files == {}
