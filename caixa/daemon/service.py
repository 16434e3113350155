"""The daemon: watcher -> rules -> claim -> journal -> scheduler, in one loop."""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from caixa import log
from caixa.daemon.journal import TERMINAL, Journal, State
from caixa.daemon.outputs import archive_target, write_error
from caixa.daemon.scheduler import Scheduler
from caixa.daemon.watcher import Watcher
from caixa.daemon.workarea import WorkArea
from caixa.daemon.workers import JobRunner, Places
from caixa.errors import HomeLockedError
from caixa.pipelines.registry import StepRegistry
from caixa.rules import RuleSet
from caixa.settings import Settings

logger = log.get("caixa.daemon")
JOURNAL_POLL_SECONDS = 1.0  # how soon a `caixa retry` from another process is noticed


@dataclass
class Progress:
    """What this run has seen, for the progress bar and the closing summary."""

    jobs: set[str] = field(default_factory=set)
    refused: int = 0
    unmatched: int = 0
    waiting: int = 0


@contextmanager
def home_lock(home: Path) -> Iterator[None]:
    """One daemon per home: two would claim the same files."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "caixa.pid"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode().strip() or "?"
            raise HomeLockedError(f"another caixa (pid {pid}) is running on {home}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


class Daemon:
    def __init__(self, settings: Settings, rules: RuleSet, registry: StepRegistry) -> None:
        self.settings = settings
        self.rules = rules
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.progress = Progress()
        self.journal = Journal(settings.journal_path)
        self.work = WorkArea(settings.work_dir)
        places = Places(rules.outputs, rules.processed, rules.failed)
        self.runner = JobRunner(
            self.journal,
            self.work,
            places,
            registry,
            settings.max_attempts,
            settings.retry_backoff,
        )
        self.scheduler = Scheduler(self.runner, settings.cpu_workers, self.wake)
        self.watcher = Watcher(
            rules.inboxes(),
            settings,
            excluded=[settings.home, rules.outputs, rules.processed, rules.failed],
            on_refuse=self._refuse,
            wake=self.wake,
        )

    def run(self, once: bool = False, on_tick: Callable[[Daemon], None] | None = None) -> Progress:
        with home_lock(self.settings.home):
            self._install_signals()
            self.recover()
            self.watcher.start()
            try:
                self._loop(once, on_tick)
            finally:
                self.watcher.stop()
                self.scheduler.stop()
                self.journal.close()
        return self.progress

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def _install_signals(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())

    def _loop(self, once: bool, on_tick: Callable[[Daemon], None] | None) -> None:
        self.watcher.scan()
        now = time.monotonic()
        next_scan = now + self.settings.scan_interval
        next_poll = now + self.settings.poll_interval
        next_journal = now
        logger.info("watching", inboxes=[str(p) for p in self.rules.inboxes()], once=once)
        while not self.stopping.is_set():
            self.wake.clear()
            now = time.monotonic()
            for path in self.watcher.due(now):
                self.take(path)
            if now >= next_journal:
                for job_id in self.journal.ready(time.time()):
                    self.progress.jobs.add(job_id)
                    self.scheduler.submit(job_id)
                next_journal = now + JOURNAL_POLL_SECONDS
            if now >= next_scan:
                self.watcher.scan()
                next_scan = now + self.settings.scan_interval
            elif now >= next_poll and self.watcher.polled:
                self.watcher.scan(only_polled=True)
                next_poll = now + self.settings.poll_interval
            if on_tick:
                on_tick(self)
            if once and self._drained():
                return
            deadlines = [next_journal, next_scan]
            if self.watcher.polled:
                deadlines.append(next_poll)
            due = self.watcher.next_due()
            if due is not None:
                deadlines.append(due)
            self.wake.wait(max(0.0, min(deadlines) - time.monotonic()))

    def _drained(self) -> bool:
        """Nothing left for a --once run: no candidate, nothing in flight, no unfinished job."""
        if self.watcher.pending() or self.scheduler.busy():
            return False
        return not any(self.journal.counts().get(s, 0) for s in State if s not in TERMINAL)

    # --- taking files ---------------------------------------------------------------------

    def take(self, path: Path) -> None:
        """Give a ready file to the first rule that fits it, claiming it by an atomic rename."""
        try:
            verdict = self.rules.decide(path)
        except OSError as exc:
            logger.warning("cannot read file", path=str(path), error=str(exc))
            self.watcher.settle(path)
            return
        rule = verdict.rule
        if rule is None or verdict.inbox is None or verdict.rel is None:
            logger.warning(
                "no rule takes this file; it stays", path=str(path), why=list(verdict.reasons)
            )
            self.progress.unmatched += 1
            self.watcher.settle(path)
            return
        if not rule.active:
            logger.warning(
                "file waits: its rule needs a step that is unavailable",
                path=str(path),
                rule=rule.name,
                unavailable=list(rule.unavailable),
            )
            self.progress.waiting += 1
            self.watcher.settle(path)
            return
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if self.journal.is_kept(path, st.st_size, st.st_mtime_ns):
            self.watcher.settle(path)
            return
        plan = {
            "steps": [s.model_dump() for s in rule.steps],
            "output": rule.output,
            "on_success": rule.on_success,
        }
        job_id = self.journal.begin_claim(
            rule=rule.name,
            rule_version=rule.version,
            plan=plan,
            inbox=verdict.inbox,
            rel=verdict.rel,
        )
        try:
            self.work.claim(path, job_id, path.name)
        except FileNotFoundError:
            self.journal.forget(job_id)
            self.work.remove(job_id)
            return
        except OSError as exc:
            self.journal.forget(job_id)
            self.work.remove(job_id)
            logger.error("cannot claim file", path=str(path), error=str(exc))
            self.watcher.settle(path)
            return
        self.journal.claimed(job_id)
        self.progress.jobs.add(job_id)
        logger.info("claimed", job=job_id, rule=rule.name, path=str(path))
        self.scheduler.submit(job_id)

    def _refuse(self, path: Path, reason: str) -> None:
        if self.journal.refuse(path, reason):
            self.progress.refused += 1
            logger.warning("refused", path=str(path), reason=reason)

    # --- after a crash --------------------------------------------------------------------

    def recover(self) -> None:
        """Finish what a crash interrupted: half-made claims, and work folders of no job."""
        for job in self.journal.jobs(State.claiming):
            if self.work.source(job.id, job.name).exists():
                self.journal.claimed(job.id)
            else:  # the rename never happened: the file is still in its inbox
                self.journal.forget(job.id)
                self.work.remove(job.id)
        for job_id in self.work.job_ids():
            try:
                job = self.journal.get(job_id)
            except KeyError:
                self._rescue_orphan(job_id)
                continue
            if job.state in TERMINAL:
                self.work.remove(job_id)

    def _rescue_orphan(self, job_id: str) -> None:
        """A work folder the journal does not know (a journal deleted by hand): its source goes
        to failed/ with a note, never silently away."""
        folder = self.work.source(job_id, "x").parent
        for source in folder.glob("*") if folder.is_dir() else []:
            target = archive_target(self.rules.failed, "_recovered", source.name)
            write_error(
                target,
                {
                    "file": source.name,
                    "error": "OrphanedWork",
                    "message": "found in the work area with no journal entry",
                    "retry": "move it back into an inbox",
                },
            )
            os.replace(source, target)
            logger.warning("orphaned work rescued", path=str(target))
        self.work.remove(job_id)
