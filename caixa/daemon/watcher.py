"""Finds files that are ready to take. watchdog events are hints for speed; scans are the truth.

A file is ready once it is complete: closed by its writer and then unchanged for a moment, or,
when no close was seen (found by a scan, or on a network share), unchanged for the settle
time. On a local filesystem (mounts.LOCAL_FILESYSTEMS, the inbox's own device) a scan counts
that time from the file's last change as this machine's kernel recorded it (its ctime, which
every write, rename or timestamp change sets): a file that had rested in its inbox before the
daemon started is taken at the first look, not a settle time later. Elsewhere (a network share,
a VM's shared folder, FUSE, a mount inside the inbox) the ctime may come from another clock, so
the time counts from the first look. Temp names and dotfiles are ignored; anything but a
regular file is refused.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import ObservedWatch
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

from caixa import log
from caixa.config.settings import Settings
from caixa.daemon.intake import is_temp_name, refusal
from caixa.daemon.mounts import LOCAL_FILESYSTEMS, filesystem_type, is_network
from caixa.errors import NO_ROOM_ERRNOS
from caixa.home import Home

logger = log.get("caixa.watcher")

# watchdog holds each unmatched IN_MOVED_FROM for 0.5 s, hoping to pair it with an
# IN_MOVED_TO, and every event behind it waits too. Each claim renames a file out of its
# inbox, so by default every file would wait half a second behind the previous claim
# (measured: p50 540 ms from close to claim). Events are only hints here: pair quickly.
InotifyMoveEventGrouper.delay = 0.01


@dataclass
class Candidate:
    key: tuple[int, int] | None = None  # (size, mtime_ns) at the last look
    since: float = 0.0  # monotonic time the key was first seen unchanged
    closed: bool = False  # a writer closed it after its last change
    writing: bool = False  # an event showed a write and no close yet


class Watcher:
    def __init__(
        self,
        inboxes: dict[Path, tuple[bool, bool]],
        settings: Settings,
        excluded: Iterable[Path],
        on_refuse: Callable[[Path, str], None],
        wake: threading.Event,
    ) -> None:
        self.inboxes = inboxes
        self.settings = settings
        self.excluded = [Path(os.path.realpath(p)) for p in excluded]
        self.on_refuse = on_refuse
        self.wake = wake
        self.polled: set[Path] = set()
        self._cands: dict[Path, Candidate] = {}
        self._settled: dict[Path, tuple[int, int]] = {}  # seen and left alone, until it changes
        self._lock = threading.Lock()
        # full events: a file renamed in from an unwatched folder arrives as a move, not a
        # creation, so it is known to be complete at once
        self._observer = InotifyObserver(generate_full_events=True)
        self._handler = _Handler(self)
        self._watches: dict[Path, ObservedWatch] = {}
        self._probe = _Probe(Home(settings.home).probe)

    # --- events (observer thread) ---------------------------------------------------------

    def start(self) -> None:
        for inbox, (recursive, poll) in self.inboxes.items():
            self._watch(inbox, recursive, poll)
        self._probe.folder.mkdir(parents=True, exist_ok=True)
        self._observer.schedule(self._probe, str(self._probe.folder))
        self._observer.start()

    def _watch(self, inbox: Path, recursive: bool, poll: bool) -> None:
        inbox.mkdir(parents=True, exist_ok=True)
        if poll or is_network(inbox):
            self.polled.add(inbox)
            logger.info("inbox polled", inbox=str(inbox), every=self.settings.poll_interval)
        else:
            self._watches[inbox] = self._observer.schedule(
                self._handler, str(inbox), recursive=recursive
            )

    def retarget(self, inboxes: dict[Path, tuple[bool, bool]], excluded: Iterable[Path]) -> None:
        """Watch the inboxes of reloaded rules: new ones are watched, removed ones dropped, and
        files left alone under the old rules are looked at again by the next scan. A watch that
        died (its folder was removed) is made anew."""
        for inbox, how in self.inboxes.items():
            watch = self._watches.get(inbox)
            if inboxes.get(inbox) != how or (watch is not None and not self._emitting(watch)):
                self.polled.discard(inbox)
                if watch is not None:
                    self._observer.unschedule(self._watches.pop(inbox))
        for inbox, (recursive, poll) in inboxes.items():
            if inbox not in self._watches and inbox not in self.polled:
                self._watch(inbox, recursive, poll)
        self.inboxes = inboxes
        self.excluded = [Path(os.path.realpath(p)) for p in excluded]
        self._settled = {}
        with self._lock:
            self._cands = {p: c for p, c in self._cands.items() if self._inbox_of(p)}

    def stalled(self, bound: float) -> str | None:
        """Why the watcher does not answer, or None. Events are only hints, yet a watcher that
        died quietly would leave the daemon seeing new files only at each scan: half blind."""
        if not self._observer.is_alive():
            return "the watcher thread has died"
        lost = [str(w) for w, watch in self._watches.items() if not self._emitting(watch)]
        if lost:
            return f"no longer watching {', '.join(lost)} (removed or unmounted?)"
        return self._probe.stalled(bound)

    def _emitting(self, watch: ObservedWatch) -> bool:
        return any(e.watch == watch and e.is_alive() for e in self._observer.emitters)

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)

    def note(
        self,
        path: Path,
        *,
        closed: bool = False,
        writing: bool = False,
        seen: os.stat_result | None = None,
    ) -> None:
        """A file that may be ready soon. `seen`: what a scan of a local inbox found, whose
        ctime says how long the file had been unchanged already."""
        if not self._wanted(path):
            return
        with self._lock:
            cand = self._cands.setdefault(path, Candidate())
            cand.closed, cand.writing = closed, writing and not closed
            if seen is not None:
                unchanged = max(0.0, time.time() - seen.st_ctime)  # a ctime ahead: just now
                cand.key, cand.since = (
                    (seen.st_size, seen.st_mtime_ns),
                    time.monotonic() - unchanged,
                )
            elif closed:  # look now, so the settle time counts from the close itself
                try:
                    st = os.lstat(path)
                    cand.key, cand.since = (st.st_size, st.st_mtime_ns), time.monotonic()
                except OSError:
                    cand.key = None
        self.wake.set()

    def forget(self, path: Path) -> None:
        with self._lock:
            self._cands.pop(path, None)

    def _wanted(self, path: Path) -> bool:
        if is_temp_name(path.name):
            return False
        real = Path(os.path.realpath(path.parent)) / path.name
        if any(real.is_relative_to(root) for root in self.excluded):
            return False
        return self._inbox_of(path) is not None

    def _inbox_of(self, path: Path) -> Path | None:
        for inbox, (recursive, _) in self.inboxes.items():
            if path.parent == inbox or (recursive and path.is_relative_to(inbox)):
                return inbox
        return None

    # --- scans (main thread) --------------------------------------------------------------

    def scan(self, only_polled: bool = False) -> None:
        """Walk the inboxes and note every file not already known; the source of truth."""
        for inbox, (recursive, _) in self.inboxes.items():
            if only_polled and inbox not in self.polled:
                continue
            self._scan_dir(inbox, recursive, self._own_clock(inbox))
        # A scan that ends with no candidate proves that no file waits to be taken: what a
        # person (or a test) checks "this file was left alone" against, rather than a clock.
        logger.debug("scan finished", polled_only=only_polled, candidates=self.pending())

    def _own_clock(self, inbox: Path) -> int | None:
        """The device of an inbox whose files' ctimes this machine's clock set, or None."""
        if inbox in self.polled or filesystem_type(inbox) not in LOCAL_FILESYSTEMS:
            return None
        try:
            return inbox.stat().st_dev
        except OSError:
            return None

    def _scan_dir(self, folder: Path, recursive: bool, device: int | None = None) -> None:
        """Note the files in `folder`; those on `device` with the time they have rested."""
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            logger.warning("cannot read inbox", inbox=str(folder), error=str(exc))
            return
        for entry in entries:
            path = Path(entry.path)
            if is_temp_name(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if recursive and self._wanted_dir(path):
                    self._scan_dir(path, recursive, device)
                continue
            reason = refusal(st.st_mode, path)
            if reason:
                self.on_refuse(path, reason)
                continue
            if self._settled.get(path) == (st.st_size, st.st_mtime_ns):
                continue
            with self._lock:
                known = path in self._cands
            if not known:  # note() looks whether it is wanted
                self.note(path, seen=st if st.st_dev == device else None)

    def _wanted_dir(self, path: Path) -> bool:
        real = Path(os.path.realpath(path))
        return not any(real.is_relative_to(root) or root == real for root in self.excluded)

    # --- readiness (main thread) ----------------------------------------------------------

    def due(self, now: float | None = None) -> list[Path]:
        """Files complete enough to take, oldest first; they leave the candidate list."""
        now = time.monotonic() if now is None else now
        ready: list[Path] = []
        with self._lock:
            items = list(self._cands.items())
        for path, cand in items:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                self.forget(path)
                continue
            except OSError:
                continue
            reason = refusal(st.st_mode, path)
            if reason:
                self.forget(path)
                self.on_refuse(path, reason)
                continue
            key = (st.st_size, st.st_mtime_ns)
            with self._lock:
                if cand.key != key:
                    cand.key, cand.since = key, now
                    continue
                if now - cand.since >= self._quiet_needed(cand):
                    ready.append(path)
                    self._cands.pop(path, None)
        return ready

    def _quiet_needed(self, cand: Candidate) -> float:
        if cand.closed:
            return self.settings.closed_settle_seconds
        if cand.writing:
            return self.settings.open_wait_seconds
        return self.settings.settle_seconds

    def next_due(self) -> float | None:
        """The monotonic time of the next readiness check worth making."""
        with self._lock:
            times = [
                c.since + self._quiet_needed(c) if c.key else 0.0 for c in self._cands.values()
            ]
        return min(times, default=None)

    def settle(self, path: Path) -> None:
        """Leave this file alone until it changes (no rule takes it, or it waits for a step)."""
        try:
            st = os.lstat(path)
        except OSError:
            return
        self._settled[path] = (st.st_size, st.st_mtime_ns)

    def pending(self) -> int:
        with self._lock:
            return len(self._cands)


class _Probe(FileSystemEventHandler):
    """A file in the home, opened for writing now and then: its event must come back through
    the observer's threads (the inotify reader and the dispatcher) that every inbox event takes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sent: float | None = None
        self.answered = 0.0

    def on_closed(self, event: FileSystemEvent) -> None:
        self.answered = time.monotonic()

    def stalled(self, bound: float) -> str | None:
        now = time.monotonic()
        if self.sent is not None and self.answered < self.sent:
            waited = now - self.sent
            return f"no event has come through for {waited:.0f} s" if waited > bound else None
        self.sent = now
        try:  # opened for writing and closed: an IN_CLOSE_WRITE event, and no disk write
            os.close(os.open(self.folder / "probe", os.O_WRONLY | os.O_CREAT, 0o644))
        except OSError as exc:
            if exc.errno in NO_ROOM_ERRNOS:  # a full or read-only home: the pause says it
                self.sent = None
                return None
            return f"cannot write its probe in the home: {exc}"
        return None


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher) -> None:
        self.w = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        src = Path(os.fsdecode(event.src_path))
        if isinstance(event, FileClosedEvent):
            self.w.note(src, closed=True)
        elif isinstance(event, FileModifiedEvent):
            self.w.note(src, writing=True)
        elif isinstance(event, FileCreatedEvent):
            self.w.note(src)
        elif isinstance(event, FileMovedEvent):
            if event.src_path:
                self.w.forget(src)
            if event.dest_path:  # a rename delivers a complete file
                self.w.note(Path(os.fsdecode(event.dest_path)), closed=True)
        elif isinstance(event, FileDeletedEvent):
            self.w.forget(src)
        elif isinstance(event, DirCreatedEvent | DirMovedEvent):
            folder = Path(os.fsdecode(getattr(event, "dest_path", "") or event.src_path))
            inbox = self.w._inbox_of(folder / "_")
            if inbox is not None:
                self.w._scan_dir(folder, recursive=True)
