"""When a file counts as complete, and what the watcher never takes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from caixa.config.settings import Settings
from caixa.daemon.watcher import Watcher, is_temp_name


@pytest.mark.parametrize(
    "name",
    [".hidden", "..two", "a.part", "b.PARTIAL", "c.crdownload", "d.tmp", "~$doc.docx", "x.swp"],
)
def test_temp_and_hidden_names_are_ignored(name: str) -> None:
    assert is_temp_name(name)


@pytest.mark.parametrize("name", ["report.pdf", "part.txt", "tmp", "a~b.txt"])
def test_ordinary_names_are_not(name: str) -> None:
    assert not is_temp_name(name)


@pytest.fixture
def watcher(tmp_path: Path) -> tuple[Watcher, list[tuple[Path, str]]]:
    refused: list[tuple[Path, str]] = []
    settings = Settings(
        home=tmp_path / "home", settle_seconds=1.0, closed_settle_seconds=0.05, open_wait_seconds=5
    )
    inbox = tmp_path / "in"
    (inbox / "sub").mkdir(parents=True)
    w = Watcher(
        {inbox: (False, False)},
        settings,
        excluded=[tmp_path / "home"],
        on_refuse=lambda p, r: refused.append((p, r)),
        wake=threading.Event(),
    )
    return w, refused


def test_a_file_seen_by_a_scan_waits_for_the_settle_time(watcher, tmp_path: Path) -> None:
    w, _ = watcher
    path = tmp_path / "in" / "a.txt"
    path.write_text("a")
    (tmp_path / "in" / "sub" / "nested.txt").write_text("not recursive")
    w.scan()
    # the write on the scan's clock: however long the scan took, the settle time counts from it
    written = time.monotonic() - (time.time() - path.stat().st_ctime)
    assert w.due(written) == []
    assert w.due(written + 0.5) == []
    assert w.due(written + 1.05) == [path]  # settle_seconds=1.0, and a clock's jitter
    assert w.pending() == 0


@pytest.mark.parametrize("polled", [False, True], ids=["local", "network share"])
def test_the_settle_time_of_a_scanned_file_counts_from_its_last_change(
    watcher, tmp_path: Path, polled: bool
) -> None:
    """On a local filesystem the wait counts from the file's ctime, not from the first look: a
    file that lay in its inbox while the daemon was stopped is not kept waiting at the start.
    Not on a network share, whose ctime comes from another machine's clock."""
    w, _ = watcher
    inbox = tmp_path / "in"
    if polled:
        w.polled.add(inbox)  # what start() decides for a share
    path = inbox / "old.txt"
    path.write_text("written before the daemon started")
    w.scan()
    first_look = time.monotonic() + w.settings.settle_seconds  # the settle time after the write
    assert w.due(first_look) == ([] if polled else [path])
    if polled:  # the settle time from the first look
        assert w.due(first_look + w.settings.settle_seconds) == [path]


def test_a_change_restarts_the_wait(watcher, tmp_path: Path) -> None:
    w, _ = watcher
    path = tmp_path / "in" / "a.txt"
    path.write_text("a")
    w.scan()
    w.due(100.0)
    path.write_text("ab")
    assert w.due(100.9) == []
    assert w.due(101.5) == []
    assert w.due(101.9) == [path]


def test_closed_files_are_taken_quickly_open_ones_wait(watcher, tmp_path: Path) -> None:
    w, _ = watcher
    closed, writing = tmp_path / "in" / "c.txt", tmp_path / "in" / "w.txt"
    closed.write_text("c")
    writing.write_text("w")
    w.note(closed, closed=True)
    w.note(writing, writing=True)
    now = time.monotonic()
    assert w.due(now + 0.1) == [closed]
    w.due(now + 0.2)
    assert w.due(now + 3) == []  # still open for writing: wait for its close
    assert w.due(now + 5.3) == [writing]  # or give up waiting after open_wait_seconds


def test_non_regular_files_are_refused_and_settled_files_left_alone(
    watcher, tmp_path: Path
) -> None:
    w, refused = watcher
    inbox = tmp_path / "in"
    os.mkfifo(inbox / "fifo")
    (inbox / "link").symlink_to("/etc/hostname")
    (inbox / "kept.txt").write_text("k")
    (inbox / ".hidden").write_text("h")
    w.settle(inbox / "kept.txt")
    w.scan()
    assert sorted(p.name for p, _ in refused) == ["fifo", "link"]
    assert "symlink (to /etc/hostname)" in dict((p.name, r) for p, r in refused)["link"]
    assert w.pending() == 0
    (inbox / "kept.txt").write_text("changed")
    w.scan()
    assert w.pending() == 1
