"""SIGKILL chaos across the model pipelines (ocr -> translate -> index, tts, detect -> classify):
the daemon killed at random moments and restarted, and separately its accelerator worker
killed mid-step; every job ends done exactly once, with no output twice or missing, and the
work area empty. The random moments come from CAIXA_TEST_SEED, as in test_crash."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import time

import pytest

from caixa.daemon import lanestate
from tests.conftest import World
from tests.documents import PORTUGUESE, scanned_pdf
from tests.photos import BUS, ZIDANE

RULES = """
rules:
  - name: scans
    inbox: scans
    steps: [ocr, {translate: {to: en}}, index]
  - name: speak
    inbox: speak
    steps: [text, tts]
  - name: photos
    inbox: photos
    steps: [detect, classify]
"""
PIPELINES = {
    "scans": ["ocr", "translate", "index"],
    "speak": ["text", "tts"],
    "photos": ["detect", "classify"],
}
KILLS = 5
# its waits allow more than pytest-timeout's 600 s; ~200 s on a busy 2-core machine
pytestmark = pytest.mark.timeout(1500)


def steps_done(world: World) -> int:
    try:
        return world.query("SELECT COUNT(*) FROM step_runs WHERE finished_at IS NOT NULL")[0][0]
    except sqlite3.OperationalError:  # no journal yet
        return 0


def accelerator_pid(world: World) -> int | None:
    """The accelerator worker's pid while it runs a step, as `caixa status` shows it."""
    lanes = lanestate.read(world.home)
    worker = lanes["lanes"]["accelerator"]["workers"][0] if lanes else None
    return worker["pid"] if worker and worker["job"] else None


def drop(world: World, batch: int) -> list[str]:
    """Three jobs per pipeline, their content distinct from every other batch's."""
    names = []
    for i in range(3):
        n = batch * 3 + i
        scanned_pdf(world.inbox("scans") / f"scan-{n}.pdf", [(PORTUGUESE[n % 6 : n % 6 + 1], 1)])
        (world.inbox("speak") / f"fala-{n}.txt").write_text(f"Olá. Esta é a mensagem {n}.\n")
        photo = world.inbox("photos") / f"photo-{n}.jpg"
        shutil.copyfile(BUS if n % 2 else ZIDANE, photo)
        with photo.open("ab") as f:  # bytes after the JPEG's end: a new hash, the same picture
            f.write(f"{n}".encode())
        names += [f"scan-{n}.pdf", f"fala-{n}.txt", f"photo-{n}.jpg"]
    return names


def test_sigkill_of_the_daemon_and_of_the_accelerator_worker_leaves_every_job_done_once(
    world: World,
) -> None:
    rnd = random.Random(int(os.environ.get("CAIXA_TEST_SEED", "20261205")))
    world.env |= {"CAIXA_MAX_ATTEMPTS": "20"}  # a killed worker costs its job a try
    world.write_rules(RULES)
    names = drop(world, 0)
    proc = world.start()
    daemon_kills = worker_kills = 0
    batch = 1

    def running_low() -> bool:
        return world.finished() >= len(names) - 2

    while daemon_kills < KILLS or worker_kills < KILLS:
        if running_low():  # keep work coming until every kill is done
            names += drop(world, batch)
            batch += 1
        if worker_kills <= daemon_kills:
            world.wait_for(
                lambda: accelerator_pid(world) is not None or running_low(),
                timeout=180,
                message="a model step",
            )
            if accelerator_pid(world) is None:  # the work left finished first: more, and again
                continue
            time.sleep(rnd.uniform(0, 0.5))  # a random moment inside it, not a synchronisation
            pid = accelerator_pid(world)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                worker_kills += 1
        else:
            before = steps_done(world)
            world.wait_for(
                lambda b=before: steps_done(world) > b or running_low(),
                timeout=180,
                message="a step",
            )
            if steps_done(world) == before:  # the work left finished first: more, and again
                continue
            time.sleep(rnd.uniform(0, 0.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            daemon_kills += 1
            proc = world.start()

    world.wait_for(lambda: world.finished() == len(names), timeout=600, message="all jobs")
    assert world.states() == {"done": len(names)}
    jobs = world.query("SELECT id, rule, name, output_dir FROM jobs")
    assert sorted(r["name"] for r in jobs) == sorted(names)  # each once
    for rule, steps in PIPELINES.items():
        folders = sorted(p.name for p in (world.outputs / rule).iterdir())
        mine = sorted(r["name"].rsplit(".", 1)[0] for r in jobs if r["rule"] == rule)
        assert folders == mine  # no "-2" twin, none missing
        for folder in (world.outputs / rule).iterdir():
            manifest = json.loads((folder / "manifest.json").read_text())
            assert [s["name"] for s in manifest["steps"]] == steps
            assert sorted(p.name for p in folder.iterdir()) == sorted(
                [*manifest["outputs"], "manifest.json"]
            )
        assert sorted(p.name for p in (world.processed / rule).iterdir()) == sorted(
            r["name"] for r in jobs if r["rule"] == rule
        )
    index = sqlite3.connect(world.home / "index.sqlite3")
    indexed = [r[0] for r in index.execute("SELECT job_id FROM documents")]
    index.close()
    assert sorted(indexed) == sorted(r["id"] for r in jobs if r["rule"] == "scans")
    assert list((world.home / "work").iterdir()) == []
    assert not list(world.root.rglob(".caixa-tmp-*"))
    assert not list(world.failed.rglob("*")) if world.failed.exists() else True
    print(f"chaos: {len(names)} jobs, {daemon_kills} daemon kills, {worker_kills} worker kills")
