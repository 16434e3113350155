"""The daemon: watcher -> rules -> claim -> journal -> scheduler, in one loop."""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from caixa import log
from caixa.daemon.fsutil import durable_move
from caixa.daemon.journal import TERMINAL, Claim, Journal, State
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
            settings.home,
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
            self.take(self.watcher.due(now))
            if now >= next_journal:
                for job_id in self.journal.ready(time.time()):
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

    def take(self, paths: list[Path]) -> None:
        """Give each ready file to the first rule that fits it, and claim it: its job is
        recorded (one synced commit for the whole batch), then it is renamed into the work area."""
        claims = [(path, claim) for path in paths if (claim := self._claim_for(path))]
        if not claims:
            return
        job_ids = self.journal.begin_claims([claim for _, claim in claims])
        for (path, claim), job_id in zip(claims, job_ids, strict=True):
            try:
                self.work.claim(path, job_id, path.name)
            except OSError as exc:
                self.journal.forget(job_id)
                self.work.remove(job_id)
                if not isinstance(exc, FileNotFoundError):  # gone is fine: someone took it back
                    logger.error("cannot claim file", path=str(path), error=str(exc))
                    self.watcher.settle(path)
                continue
            logger.info("claimed", job=job_id, rule=claim.rule, path=str(path))
            self.scheduler.submit(job_id)

    def _claim_for(self, path: Path) -> Claim | None:
        """The claim a ready file gets, or None (and why, logged once) if it stays."""
        try:
            verdict = self.rules.decide(path)
            st = path.lstat()
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                logger.warning("cannot read file", path=str(path), error=str(exc))
                self.watcher.settle(path)
            return None
        rule = verdict.rule
        if rule is None or verdict.inbox is None or verdict.rel is None:
            logger.warning(
                "no rule takes this file; it stays", path=str(path), why=list(verdict.reasons)
            )
            self.progress.unmatched += 1
            self.watcher.settle(path)
            return None
        if not rule.active:
            logger.warning(
                "file waits: its rule needs a step that is unavailable",
                path=str(path),
                rule=rule.name,
                unavailable=list(rule.unavailable),
            )
            self.progress.waiting += 1
            self.watcher.settle(path)
            return None
        if self.journal.is_kept(path, st.st_size, st.st_mtime_ns):
            self.watcher.settle(path)
            return None
        plan = {
            "steps": [s.model_dump() for s in rule.steps],
            "output": rule.output,
            "on_success": rule.on_success,
        }
        return Claim(rule.name, rule.version, plan, verdict.inbox, verdict.rel)

    def _refuse(self, path: Path, reason: str) -> None:
        if self.journal.refuse(path, reason):
            self.progress.refused += 1
            logger.warning("refused", path=str(path), reason=reason)

    # --- after a crash --------------------------------------------------------------------

    def recover(self) -> None:
        """Finish what a crash interrupted: half-made claims and retries, and work folders that
        no unfinished job owns."""
        for job in self.journal.jobs(State.claiming):
            source = self.work.source(job.id, job.name)
            retried_from = Path(job.final_path) if job.final_path else None
            if not source.exists() and retried_from and retried_from.exists():
                self.work.claim(retried_from, job.id, job.name)  # `caixa retry` was cut short
            elif not source.exists():  # the rename never happened: the file is in its inbox
                self.journal.forget(job.id)
                self.work.remove(job.id)
        for job_id in self.work.job_ids():
            try:
                job = self.journal.get(job_id)
            except KeyError:
                job = None
            if job is None or job.state in TERMINAL:
                self._rescue(job_id)

    def _rescue(self, job_id: str) -> None:
        """A work folder of no unfinished job (a journal deleted by hand): a source still in it
        goes to failed/ with a note, never silently away."""
        folder = self.work.source(job_id, "_").parent
        for source in folder.iterdir() if folder.is_dir() else []:
            target = archive_target(self.rules.failed, "_recovered", source.name)
            write_error(
                target,
                {
                    "file": source.name,
                    "error": "OrphanedWork",
                    "message": f"found in the work area ({job_id}) with no unfinished job",
                    "retry": "move it back into an inbox",
                },
            )
            durable_move(source, target)
            logger.warning("orphaned work rescued", path=str(target))
        self.work.remove(job_id)
