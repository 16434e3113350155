"""SIGKILL at random moments, restart each time: every job done exactly once, nothing lost."""

from __future__ import annotations

import os
import random
import signal
import time

from tests.conftest import World

RULES = """
rules:
  - name: docs
    inbox: in
    steps: [metadata, copy]
"""


def body(i: int) -> str:
    return f"documento {i}\n" + "linha com acentos: ação, coração, pão\n" * (1 + i % 40)


def test_kill_nine_five_times_then_every_job_done_exactly_once(world: World) -> None:
    rnd = random.Random(int(os.environ.get("CAIXA_TEST_SEED", "20261121")))
    world.write_rules(RULES)
    inbox = world.inbox()
    names = []

    def drop(first: int, count: int) -> None:
        for i in range(first, first + count):
            (inbox / f"doc-{i:03}.txt").write_text(body(i))
            names.append(f"doc-{i:03}.txt")

    drop(0, 250)
    kills = 0
    for round_ in range(6):
        before = world.finished()
        proc = world.start()
        # kill only once work is under way, at a random instant inside it
        world.wait_for(lambda b=before: world.finished() > b, timeout=60, message="progress")
        time.sleep(rnd.uniform(0, 0.4))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        if round_ == 2:
            drop(250, 50)  # dropped while the daemon is down
    assert kills >= 5

    world.run_once()

    assert world.states() == {"done": 300}
    assert [r[0] for r in world.query("SELECT COUNT(DISTINCT name) FROM jobs")] == [300]
    for name in names:
        i = int(name[4:7])
        folder = world.outputs / "docs" / name.removesuffix(".txt")
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [name, f"doc-{i:03}.metadata.json", "manifest.json"]
        ), f"{folder} holds something half-written or twice"
        assert (folder / name).read_text() == body(i)
    assert len(list((world.outputs / "docs").iterdir())) == 300  # no "-2" twins
    assert len(list((world.processed / "docs").iterdir())) == 300
    assert list(inbox.iterdir()) == []
    assert list((world.home / "work").iterdir()) == []
    assert not list(world.root.rglob(".caixa-tmp-*"))
