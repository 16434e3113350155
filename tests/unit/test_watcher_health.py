"""The watcher answers for itself: a probe event must come back through its threads, and a
watch that died (its folder removed) is noticed, then made anew by a reload."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

from caixa.config.settings import Settings
from caixa.daemon.watcher import Watcher
from tests.conftest import wait_until


def probe_back(watcher: Watcher) -> bool:
    """No probe is out: the last one's event came back through the observer's threads."""
    probe = watcher._probe
    return probe.sent is None or probe.answered >= probe.sent


def test_a_stuck_event_handler_is_seen_and_so_is_its_recovery(tmp_path: Path) -> None:
    """The journal's write lock can be held by another process for up to its busy timeout;
    an event handler waiting on it holds up every event behind it."""
    inbox = tmp_path / "in"
    stuck, unstuck = threading.Event(), threading.Event()

    def refuse(path: Path, reason: str) -> None:
        stuck.set()
        unstuck.wait(30)

    watcher = Watcher(
        {inbox: (True, False)},
        Settings(home=tmp_path / "home"),
        excluded=[tmp_path / "home"],
        on_refuse=refuse,
        wake=threading.Event(),
    )
    watcher.start()
    try:
        for _ in range(3):  # each look sends a probe once the last one came back
            assert watcher.stalled(bound=0.5) is None
            wait_until(lambda: probe_back(watcher), message="the probe's event")

        # a folder with a fifo moved in: the event thread scans it, and waits in on_refuse
        (tmp_path / "new").mkdir()
        os.mkfifo(tmp_path / "new" / "pipe")
        (tmp_path / "new").rename(inbox / "new")
        assert stuck.wait(60)
        watcher.stalled(bound=0.5)
        why = wait_until(lambda: watcher.stalled(bound=0.5))
        assert str(why).startswith("no event has come through for ")

        unstuck.set()
        wait_until(lambda: watcher.stalled(bound=0.5) is None)
    finally:
        unstuck.set()
        watcher.stop()


def test_a_removed_inbox_is_no_longer_watched_until_the_rules_are_reloaded(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "in"
    wake = threading.Event()
    watcher = Watcher(
        {inbox: (False, False)},
        Settings(home=tmp_path / "home"),
        excluded=[tmp_path / "home"],
        on_refuse=lambda p, r: None,
        wake=wake,
    )
    watcher.start()
    try:
        shutil.rmtree(inbox)
        why = wait_until(lambda: watcher.stalled(bound=5))
        assert why == f"no longer watching {inbox} (removed or unmounted?)"

        wait_until(lambda: probe_back(watcher), message="the probe's event")
        watcher.retarget({inbox: (False, False)}, [tmp_path / "home"])
        assert watcher.stalled(bound=5) is None
        wake.clear()
        (inbox / "a.txt").write_text("seen by the new watch\n")
        assert wake.wait(60)
        assert watcher.pending() == 1
    finally:
        watcher.stop()
