"""500 files at once, 20 of them written slowly: every one done once, none read early."""

from __future__ import annotations

import hashlib
import threading
import time

from tests.conftest import World

RULES = """
rules:
  - name: copy
    inbox: in
    steps: [copy]
"""


def content(i: int) -> bytes:
    return f"file {i}: ".encode() + bytes(range(256)) * (1 + i % 7)


def test_500_files_with_slow_writers_each_done_once_and_whole(world: World) -> None:
    world.write_rules(RULES)
    inbox = world.inbox()
    world.start()
    world.wait_log("watching")  # logged once the watches are in place and the first scan ran

    def slow_write(i: int) -> None:
        data = content(i)
        with open(inbox / f"slow-{i:03}.bin", "wb") as f:
            for k in range(10):  # ten chunks over 3 s, one open file, flushed each time
                f.write(data[k * len(data) // 10 : (k + 1) * len(data) // 10])
                f.flush()
                time.sleep(0.3)

    writers = [threading.Thread(target=slow_write, args=(i,)) for i in range(20)]
    for t in writers:
        t.start()
    for i in range(20, 500):
        (inbox / f"fast-{i:03}.bin").write_bytes(content(i))
    for t in writers:
        t.join()

    world.wait_for(lambda: world.finished() >= 500, timeout=300, message="500 jobs")
    world.wait_quiet_scan()  # anything claimed twice would show up by then
    assert world.states() == {"done": 500}

    expected = {
        (f"slow-{i:03}.bin" if i < 20 else f"fast-{i:03}.bin"): content(i) for i in range(500)
    }
    published = sorted(p for p in world.outputs.rglob("*.bin"))
    assert len(published) == 500
    for path in published:
        assert path.parent.name == path.stem  # one folder per job, no "-2" twins
        assert path.read_bytes() == expected[path.name], f"{path.name} was taken before complete"
    for manifest in world.manifests():
        data = expected[manifest["source"]["name"]]
        assert manifest["source"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert manifest["source"]["size"] == len(data)
    assert sorted(p.name for p in (world.root / "processed" / "copy").iterdir()) == sorted(expected)
    assert list(inbox.iterdir()) == []
    assert list((world.home / "work").iterdir()) == []
