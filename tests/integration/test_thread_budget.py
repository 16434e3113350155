"""The lanes' thread budget reaches the steps: two multi-page OCR jobs on two CPU lanes never run
more tesseract processes at once than the machine has cores. Every tesseract the daemon starts
goes through a wrapper on PATH that counts, under a lock, how many are running as it starts.
And the accelerator's budget follows the load: a model step gets every core while no CPU step
runs and its share while one does (asked once its worker has started), and a stream of model
jobs keeps every core while each one publishes, as each step's manifest records."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from caixa.daemon.worker.pool import WorkerPool
from caixa.daemon.worker.protocol import Task
from caixa.pipelines.base import StepInput
from tests.conftest import World
from tests.documents import PORTUGUESE, scanned_pdf
from tests.workers import WORKER_CONFIG

COUNTER = """#!/bin/bash
# counts the tesseracts running at once: +1 as one starts, -1 as it ends, under a lock
exec 9>>"$TESSERACT_COUNT/lock"
flock 9
now=$(( $(cat "$TESSERACT_COUNT/now" 2>/dev/null || echo 0) + 1 ))
echo "$now" > "$TESSERACT_COUNT/now"
echo "$now" >> "$TESSERACT_COUNT/seen"
flock -u 9
{real} "$@"
status=$?
flock 9
echo $(( $(cat "$TESSERACT_COUNT/now") - 1 )) > "$TESSERACT_COUNT/now"
flock -u 9
exit $status
"""


def test_two_ocr_jobs_on_two_cpu_lanes_start_no_more_tesseracts_than_cores(
    world: World, tmp_path: Path
) -> None:
    real = shutil.which("tesseract")
    assert real is not None
    shims, counts = tmp_path / "bin", tmp_path / "counts"
    shims.mkdir()
    counts.mkdir()
    wrapper = shims / "tesseract"
    wrapper.write_text(COUNTER.format(real=real))
    wrapper.chmod(0o755)
    world.env |= {
        "PATH": f"{shims}{os.pathsep}{world.env['PATH']}",
        "TESSERACT_COUNT": str(counts),
        "CAIXA_CPU_WORKERS": "2",
    }
    world.write_rules("rules:\n  - name: scans\n    inbox: in\n    steps: [ocr]\n")
    inbox = world.inbox()
    pages = [([p], 1) for p in PORTUGUESE]
    for name in ("um.pdf", "dois.pdf"):
        scanned_pdf(inbox / name, pages, dpi=150)

    world.run_once(timeout=600)

    assert world.states() == {"done": 2}
    seen = [int(n) for n in (counts / "seen").read_text().split()]
    assert len(seen) >= 12  # every page of both scans went through the wrapper
    assert max(seen) <= len(os.sched_getaffinity(0))
    manifests = world.manifests()
    assert all("tesseract" in m["steps"][0]["data"]["programs"] for m in manifests)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core has no share to give")
def test_a_model_step_gets_every_core_while_the_cpu_lane_is_idle_and_its_share_while_not(
    world: World, tmp_path: Path
) -> None:
    cores = len(os.sched_getaffinity(0))
    started, gate = tmp_path / "started", tmp_path / "gate"
    world.env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    world.write_rules(
        f"""
rules:
  - name: notes
    inbox: notes
    steps:
      - llm: {{task: prompt, max_tokens: 8}}
  - name: held
    inbox: held
    steps:
      - hold: {{started: "{started}", until: "{gate}"}}
"""
    )
    notes, held = world.inbox("notes"), world.inbox("held")
    world.start()

    (notes / "alone.txt").write_text("Name one colour.")
    alone = world.wait_for(lambda: _manifest(world, "alone.txt"), 300, "the first answer")

    (held / "work.txt").write_text("CPU work")
    world.wait_for(started.exists, 120, "the CPU step to start")
    (notes / "beside.txt").write_text("Name one fruit.")
    beside = world.wait_for(lambda: _manifest(world, "beside.txt"), 300, "the second answer")
    gate.write_text("go")
    world.wait_for(lambda: world.states() == {"done": 3}, 120, "the CPU job to finish")

    assert alone["steps"][0]["name"] == "llm"
    assert alone["steps"][0]["threads"] == cores  # nothing else wanted a core
    assert alone["steps"][0]["data"]["threads"]["prompt"] == cores  # llama.cpp read on all
    assert beside["steps"][0]["threads"] == max(1, cores // 2)  # the CPU lane had work
    assert beside["steps"][0]["data"]["threads"]["prompt"] == max(1, cores // 2)
    assert all(m["steps"][0]["data"]["completion_tokens"] > 0 for m in (alone, beside))


def _manifest(world: World, name: str) -> dict[str, Any] | None:
    return next((m for m in world.manifests() if m["source"]["name"] == name), None)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core has no share to give")
@pytest.mark.parametrize("step", ["llm: {task: prompt, max_tokens: 4}", "tts"])
def test_a_stream_of_model_jobs_keeps_every_core_while_each_one_publishes(
    world: World, step: str
) -> None:
    """Each job's publish runs on the CPU lane while the next job's model step starts: brief
    file work, which leaves the model every core (it used to halve the budget of every step
    after the first). Piper's voice, whose threads onnxruntime fixes, gets a session for them."""
    cores = len(os.sched_getaffinity(0))
    world.env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    world.write_rules(f"rules:\n  - name: notes\n    inbox: notes\n    steps:\n      - {step}\n")
    notes = world.inbox("notes")
    for n, thing in enumerate(("colour", "fruit", "tree", "river", "city")):
        (notes / f"{n}.txt").write_text(f"Name one {thing}.")

    world.run_once(timeout=600)

    assert world.states() == {"done": 5}
    steps = [m["steps"][0] for m in world.manifests()]
    assert [s["threads"] for s in steps] == [cores] * 5
    if step == "tts":
        assert all(
            s["data"]["engine"] == "piper" and s["data"]["duration_seconds"] > 0.5 for s in steps
        )
    else:
        assert all(s["data"]["threads"]["prompt"] == cores for s in steps)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core has no share to give")
def test_batches_of_model_steps_keep_every_core_while_the_batch_before_publishes(
    world: World,
) -> None:
    """A batch's jobs all publish at once, more than the lane has threads: queued file work,
    not CPU steps to come, so the next batch keeps every core (it was given the share, and
    e5 built a second ONNX session for it)."""
    cores = len(os.sched_getaffinity(0))
    world.write_rules("rules:\n  - name: notes\n    inbox: notes\n    steps: [index]\n")
    notes = world.inbox("notes")
    for n in range(20):
        (notes / f"{n:02}.txt").write_text(f"{PORTUGUESE[n % len(PORTUGUESE)]} ({n})\n")

    world.run_once(timeout=600)

    assert world.states() == {"done": 20}
    steps = [m["steps"][0] for m in world.manifests()]
    assert max(s.get("batch", 1) for s in steps) > 1, "the index steps ran in batches"
    assert [s["threads"] for s in steps] == [cores] * 20
    assert all(s["data"]["chunks"] >= 1 for s in steps)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core has no share to give")
def test_a_model_step_is_given_its_threads_once_its_worker_has_started(tmp_path: Path) -> None:
    """The lane asks for the budget when the worker takes the step, not when it picks it: a
    worker that starts first takes a second or more, in which the CPU lane may have gone idle
    (the first step of a run used to keep the share it was given before its worker started)."""
    cores = len(os.sched_getaffinity(0))
    pool = WorkerPool("accelerator", 1, WORKER_CONFIG, keep_alive=60, on_change=lambda: None)
    text = tmp_path / "note.txt"
    text.write_text("The lane asks when the worker is ready.\n")
    (tmp_path / "work").mkdir()
    job = StepInput("j1", "speak", text, text.name, "text/plain", (), tmp_path / "work", tmp_path)
    asked: list[bool] = []

    def budget() -> int:
        asked.append(pool.workers[0].hello is not None)  # its process is up and has said so
        return cores

    try:
        reply = pool.run(Task("tts", {}, job, None), 300, budget)
    finally:
        pool.close()
    assert asked == [True]
    assert reply.threads == cores and reply.result is not None
    assert reply.result.data["duration_seconds"] > 0.5
