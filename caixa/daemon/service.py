"""The daemon: watcher -> rules -> claim -> journal -> scheduler, in one loop.

Its life under systemd: READY once the first scan is taken, rules reloaded on SIGHUP or when
the rules file changes (an invalid file keeps the old rules), and on SIGTERM no new file taken,
running steps given `stop_timeout` to finish, the rest left to resume at the next start, exit 0.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from caixa import log
from caixa.config.rules import RuleSet
from caixa.config.rules import load as load_rules
from caixa.config.settings import Settings
from caixa.daemon import intake
from caixa.daemon import jobs as job_phases
from caixa.daemon.fsutil import fsync_dirs
from caixa.daemon.health import Supervisor, ThreadDeaths
from caixa.daemon.jobs import JobRunner, Places
from caixa.daemon.journal import TERMINAL, Claim, Journal, State, status_line
from caixa.daemon.notify import Notifier
from caixa.daemon.scheduler import Scheduler
from caixa.daemon.space import Room
from caixa.daemon.watcher import Watcher
from caixa.daemon.workarea import NotRegularError, WorkArea
from caixa.display import legible
from caixa.errors import InputError, RulesError, is_no_room
from caixa.home import Home
from caixa.pipelines.registry import StepRegistry

logger = log.get("caixa.daemon")
JOURNAL_POLL_SECONDS = 1.0  # how soon a `caixa retry` (another process) or a rules edit is noticed


@dataclass
class Progress:
    """What this run has seen, for the progress bar and the closing summary."""

    refused: int = 0
    unmatched: int = 0
    waiting: int = 0


class Daemon:
    """The daemon on one home; whoever makes it holds the home's lock (Home.lock) first, so a
    second daemon never opens the journal of a running one."""

    def __init__(self, settings: Settings, rules: RuleSet, registry: StepRegistry) -> None:
        self.settings = settings
        self.rules = rules
        self.registry = registry
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.progress = Progress()
        self.home = Home(settings.home)
        self.journal = Journal(self.home.journal)
        self.work = WorkArea(self.home.work)
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
        self.room = Room(lambda: self._excluded(self.rules), settings.min_free)
        self.deaths = ThreadDeaths()
        self.scheduler = Scheduler(self.runner, settings, self.wake, self.room, self.deaths)
        self.watcher = Watcher(
            rules.inboxes(),
            settings,
            excluded=self._excluded(rules),
            on_refuse=self._refuse,
            wake=self.wake,
        )
        self.supervisor = Supervisor(
            Notifier.from_env(),
            {
                "watcher": lambda: self.watcher.stalled(settings.stall_seconds),
                "scheduler": self.scheduler.stalled,
                "threads": self.deaths.check,
            },
            self._status,
        )
        self.rules_problem: str | None = None  # why the rules file on disk is not the one used
        self._reload_asked = False
        self._stop_signalled = False
        self._recovered = False
        self._rules_loaded = self._rules_last = self._rules_key()

    def _excluded(self, rules: RuleSet) -> list[Path]:
        return [self.settings.home, rules.outputs, rules.processed, rules.failed]

    def run(self, once: bool = False, on_tick: Callable[[Daemon], None] | None = None) -> Progress:
        self._install_signals()
        self.deaths.install()
        self._check_usable(self.rules)
        self._recover()
        self.scheduler.start()
        self.watcher.start()
        try:
            self._loop(once, on_tick)
        finally:
            finished = self._shutdown()
        if not finished:
            # Steps still run, and the interpreter would wait at exit for the lane threads that
            # wait on them. Leaving now is what a crash does, which the journal is built for:
            # their workers end with the daemon; their jobs resume at that step at next start.
            os._exit(0)
        return self.progress

    def _recover(self) -> None:
        """Finish what a crash interrupted; with no room to write (a full disk at start), the
        daemon starts paused and recovers once there is room, rather than exit and be
        restarted into the same full disk by systemd, again and again."""
        try:
            job_phases.recover(self.journal, self.work, self.rules.failed)
            self._recovered = True
        except Exception as exc:
            if not is_no_room(exc):
                raise
            self.room.failed(exc)
            self._recovered = False

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def _install_signals(self) -> None:
        """Handlers only set flags. A handler runs in the main thread between two bytecodes,
        maybe while that thread holds `wake`'s lock (setting, clearing or waiting on it), so
        setting `wake` there could deadlock. Instead the kernel writes each signal to a pipe,
        and a small thread that reads it wakes the loop."""
        if threading.current_thread() is not threading.main_thread():
            return
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        threading.Thread(
            target=self._wake_on_signals, args=(read_end,), name="caixa-signals", daemon=True
        ).start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)  # systemctl reload

    def _wake_on_signals(self, read_end: int) -> None:
        while os.read(read_end, 64):
            self.wake.set()

    def _on_stop_signal(self, *_: object) -> None:
        if self._stop_signalled:  # asked again (Ctrl-C twice): leave now, as a crash would
            with contextlib.suppress(OSError):  # a stderr that cannot be written stops nothing
                os.write(2, b"caixa: stopping now; running steps resume at the next start\n")
            os._exit(0)
        self._stop_signalled = True

    def _on_reload_signal(self, *_: object) -> None:
        self._reload_asked = True

    def _loop(self, once: bool, on_tick: Callable[[Daemon], None] | None) -> None:
        self.watcher.scan()
        now = time.monotonic()
        next_scan = now + self.settings.scan_interval
        next_poll = now + self.settings.poll_interval
        next_journal = next_tick = now
        ready_at: float | None = None
        logger.info("watching", inboxes=[str(p) for p in self.rules.inboxes()], once=once)
        while not self.stopping.is_set():
            self.wake.clear()
            if self._stop_signalled:
                self.stop()
                break
            now = time.monotonic()
            if not self.room.paused:  # while paused, files stay in their inboxes
                self.take(self.watcher.due(now))
            if ready_at is None:  # what the first scan found is due by then, unless still written
                ready_at = now + self.settings.settle_seconds
            if not self.supervisor.ready and (now >= ready_at or not self.watcher.pending()):
                self.supervisor.mark_ready()
                logger.info("ready", jobs_in_flight=self.scheduler.busy())
            if self._reload_asked:
                self._reload_asked = False
                self.reload("SIGHUP")
            if now >= next_journal:
                was_paused = self.room.paused
                if not self.room.check() and not self._recovered:
                    self._recover()
                if not self.room.paused:
                    if was_paused:  # what came while paused is taken now, not at the next scan
                        self.watcher.scan()
                    for job_id in self.journal.ready(time.time()):
                        self.scheduler.submit(job_id)
                self._notice_rules_change()
                next_journal = now + JOURNAL_POLL_SECONDS
            if now >= next_tick:
                next_tick = self.supervisor.tick(now)
            if now >= next_scan:
                self.watcher.scan()
                next_scan = now + self.settings.scan_interval
            elif now >= next_poll and self.watcher.polled:
                self.watcher.scan(only_polled=True)
                next_poll = now + self.settings.poll_interval
            if on_tick:
                on_tick(self)
            if once and self._drained():
                if on_tick:  # once more: jobs may have finished since the tick above
                    on_tick(self)
                return
            deadlines = [next_journal, next_scan, next_tick]
            if self.watcher.polled:
                deadlines.append(next_poll)
            due = self.watcher.next_due()
            if due is not None:
                deadlines.append(due)
            self.wake.wait(max(0.0, min(deadlines) - time.monotonic()))

    def _shutdown(self) -> bool:
        """Take no new file; give running steps `stop_timeout` to finish. False when some still
        run: their jobs resume at the next start."""
        in_flight = self.scheduler.busy()
        self.supervisor.stopping(in_flight)
        self.watcher.stop()
        if in_flight:
            logger.info(
                "stopping: running steps may finish",
                jobs_in_flight=in_flight,
                grace=self.settings.stop_timeout,
            )
        finished = self.scheduler.stop(self.settings.stop_timeout)
        if finished:
            self.journal.close()
        else:
            logger.warning(
                "stopping with steps still running; their jobs resume at the next start",
                grace=self.settings.stop_timeout,
            )
        logger.info("stopped")
        return finished

    def _status(self) -> str:
        """The queue in a line, for `systemctl status`."""
        line = status_line(self.journal.counts())
        if self.room.paused:
            line = f"{self.room.paused}; {line}"
        if self.rules_problem:
            line += f"; rules file invalid, old rules kept: {self.rules_problem}"
        return line

    # --- reloading the rules --------------------------------------------------------------

    def _rules_key(self) -> tuple[int, ...] | None:
        try:
            st = self.rules.source.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _notice_rules_change(self) -> None:
        """Reload once the rules file has changed and then kept still for one look: an editor
        may still be writing it."""
        key = self._rules_key()
        if key != self._rules_loaded and key == self._rules_last:
            self.reload("the rules file changed")
        self._rules_last = key

    def reload(self, why: str) -> None:
        """Read the rules again. A valid file applies to the next file taken (jobs already
        claimed keep the plan they were claimed with); an invalid one is reported with its
        file:line and key, and the old rules keep running."""
        self.supervisor.reloading()
        self._rules_loaded = self._rules_last = self._rules_key()
        try:
            new = load_rules(self.rules.source, self.registry)
            self._check_usable(new)
        except (RulesError, OSError, UnicodeError) as exc:
            self.rules_problem = str(exc).splitlines()[0]
            logger.error("rules not reloaded; the old rules keep running", why=why, error=str(exc))
        else:
            before = set(self.rules.inboxes())
            self.rules = new
            self.rules_problem = None
            self.runner.places = Places(new.outputs, new.processed, new.failed)
            self.watcher.retarget(new.inboxes(), self._excluded(new))
            self.watcher.scan()
            logger.info(
                "rules reloaded",
                why=why,
                rules=[r.name for r in new.rules],
                inboxes_added=sorted(str(p) for p in set(new.inboxes()) - before),
                inboxes_dropped=sorted(str(p) for p in before - set(new.inboxes())),
            )
        self.supervisor.reloaded()

    def _check_usable(self, rules: RuleSet) -> None:
        """Refuse rules whose folders this process cannot write: under systemd the service may
        write only where its unit lets it (ReadWritePaths)."""
        for folder in [*rules.inboxes(), rules.outputs, rules.processed, rules.failed]:
            existing = next(p for p in (folder, *folder.parents) if p.exists())
            if not os.access(existing, os.W_OK):
                raise RulesError(
                    f"{rules.source}: caixa cannot write {folder} (as user {os.getuid()});"
                    " give it access, or under systemd run `caixa install-service` again"
                    " and restart (the unit opens the rules' folders)"
                )

    def _drained(self) -> bool:
        """Nothing left for a --once run: no candidate, nothing in flight, no unfinished job."""
        if self.watcher.pending() or self.scheduler.busy():
            return False
        return not any(self.journal.counts().get(s, 0) for s in State if s not in TERMINAL)

    # --- taking files ---------------------------------------------------------------------

    def take(self, paths: list[Path]) -> None:
        """Give each ready file to the first rule that fits it, and claim it: its job is
        recorded (one synced commit for the whole batch), then it is renamed into the work
        area. The renames are made durable together (every folder they touched synced, at
        once) before any job of the batch goes on."""
        claims = [(path, claim) for path in paths if (claim := self._claim_for(path))]
        if not claims:
            return
        try:
            job_ids = self.journal.begin_claims([claim for _, claim in claims])
        except Exception as exc:
            if not is_no_room(exc):
                raise
            self.room.failed(exc)  # the files stay in their inboxes; the scan after finds them
            return
        moved: list[tuple[Path, Claim, str, Path]] = []
        for (path, claim), job_id in zip(claims, job_ids, strict=True):
            name = claim.rel.rsplit("/", 1)[-1]
            try:
                target = self.work.claim(path, job_id, name, claim.inbox, sync=False)
            except OSError as exc:
                if self.work.source(job_id, name).exists():  # moved; the rest of it failed
                    if is_no_room(exc):
                        self.room.failed(exc)
                    continue  # the job is the journal's: the poll after the pause takes it
                with contextlib.suppress(Exception):  # else recovery forgets it at next start
                    self.journal.forget(job_id)
                self.work.remove(job_id)
                if isinstance(exc, NotRegularError):
                    self._refuse(path, exc.strerror)
                elif is_no_room(exc):
                    self.room.failed(exc)
                elif not isinstance(exc, FileNotFoundError):  # gone is fine: someone took it
                    logger.error("cannot claim file", path=str(path), error=str(exc))
                    self.watcher.settle(path)
                continue
            moved.append((path, claim, job_id, target))
        try:  # where the files went, then where they left: never in neither place
            fsync_dirs({target.parent for *_, target in moved})
            fsync_dirs({path.parent for path, *_ in moved})
        except OSError as exc:  # the jobs are the journal's: the poll after the pause takes them
            if is_no_room(exc):
                self.room.failed(exc)
            else:
                logger.error("cannot sync the claimed files' folders", error=str(exc))
            return
        for path, claim, job_id, _ in moved:
            logger.info("claimed", job=job_id, rule=claim.rule, path=str(path))
            self.scheduler.submit(job_id)

    def _claim_for(self, path: Path) -> Claim | None:
        """The claim a ready file gets, or None (and why, logged once) if it stays."""
        try:
            decision = intake.decide(self.rules, path, self.journal.is_kept)
        except InputError as exc:  # swapped for a symlink while its type was sniffed
            self._refuse(path, str(exc))
            return None
        except OSError as exc:
            if not isinstance(exc, FileNotFoundError):
                logger.warning("cannot read file", path=str(path), error=str(exc))
                self.watcher.settle(path)
            return None
        if decision.refused is not None:
            self._refuse(path, decision.refused)
            return None
        if decision.claim is None:
            if decision.stays is intake.Stays.unmatched:
                logger.warning(decision.stays, path=str(path), why=list(decision.details))
                self.progress.unmatched += 1
            elif decision.stays is intake.Stays.waiting:
                logger.warning(
                    decision.stays,
                    path=str(path),
                    rule=decision.rule,
                    unavailable=list(decision.details),
                )
                self.progress.waiting += 1
            self.watcher.settle(path)
        return decision.claim

    def _refuse(self, path: Path, reason: str) -> None:
        try:
            first = self.journal.refuse(Path(legible(str(path))), legible(reason))
        except Exception as exc:  # recorded at a later look, once there is room
            if not is_no_room(exc):
                raise
            self.room.failed(exc)
            return
        if first:
            self.progress.refused += 1
            logger.warning("refused", path=str(path), reason=reason)
