"""What the daemon tells systemd, and when: READY once the first scan is taken, STATUS with the
queue every few seconds, and WATCHDOG=1 only while every part answers.

The failure users of file-watching daemons fear most is one that is alive but blind: its watcher
thread died and nothing noticed. So the watchdog is not petted by a timer that runs whatever
happens; it is petted from the daemon's own loop (a stuck loop stops it), and only after each
part has answered its check. A part that stops answering stops the pings, and systemd restarts
the service after WatchdogSec.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from caixa import log
from caixa.daemon.notify import Notifier, monotonic_usec, watchdog_interval

logger = log.get("caixa.health")

STATUS_SECONDS = 5.0  # how often STATUS= is refreshed, and the parts checked without a watchdog

Check = Callable[[], str | None]  # why a part does not answer, or None when it does


class ThreadDeaths:
    """Threads of the daemon that ended on an exception: each is logged with its traceback,
    and while any is recorded `check` fails, so the watchdog stops and systemd restarts the
    service (a thread that died may hold work no one else will do). `install` makes it the
    process's threading.excepthook; code that catches an exception a thread cannot survive
    (a pool's task) gives it to `record`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deaths: list[str] = []

    def install(self) -> None:
        threading.excepthook = self._hook

    def _hook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread else "a thread"
        self.record(name, args.exc_value or args.exc_type())

    def record(self, thread: str, exc: BaseException) -> None:
        with self._lock:
            self._deaths.append(f"{thread}: {type(exc).__name__}: {exc}")
        logger.error(
            "a thread of the daemon failed; its work is taken again, and the watchdog stops",
            thread=thread,
            exc_info=exc,
        )

    def check(self) -> str | None:
        with self._lock:
            return "; ".join(self._deaths) or None


class Supervisor:
    def __init__(self, notifier: Notifier, checks: Mapping[str, Check], status: Callable[[], str]):
        self.notifier = notifier
        self.checks = checks
        self.status = status
        self.problems: dict[str, str] = {}
        self.ready = False
        interval = watchdog_interval()
        # half the manager's interval, as sd_watchdog_enabled(3) advises
        self.ping_every = interval / 2 if interval else None
        self._next_status = 0.0
        self._next_check = 0.0

    def tick(self, now: float) -> float:
        """Check the parts and notify what is due; return when the next tick is due."""
        if now >= self._next_check:
            if self._check():
                self._next_status = now  # say at once what stopped, or started again, answering
            if self.ping_every is not None and not self.problems:
                self.notifier.send("WATCHDOG=1")
            self._next_check = now + min(self.ping_every or STATUS_SECONDS, STATUS_SECONDS)
        if now >= self._next_status:
            if self.notifier.enabled:  # the line counts every job: only when someone listens
                self.notifier.send(f"STATUS={self._status_line()}")
            self._next_status = now + STATUS_SECONDS
        return min(self._next_check, self._next_status)

    def mark_ready(self) -> None:
        self.ready = True
        if self.notifier.enabled:
            self.notifier.send("READY=1", f"STATUS={self._status_line()}")

    def reloading(self) -> None:
        self.notifier.send("RELOADING=1", monotonic_usec(), "STATUS=reloading the rules")

    def reloaded(self) -> None:
        if self.notifier.enabled:
            self.notifier.send("READY=1", f"STATUS={self._status_line()}")

    def stopping(self, running: int) -> None:
        self.notifier.send("STOPPING=1", f"STATUS=stopping: {running} jobs in flight")

    def _check(self) -> bool:
        """Ask every part; true when which parts answer changed."""
        before = set(self.problems)
        for part, check in self.checks.items():
            why = check()
            was = self.problems.get(part)
            if why and not was:
                logger.error(
                    "part of the daemon does not answer; systemd's watchdog is no longer petted",
                    part=part,
                    why=why,
                )
            elif was and not why:
                logger.info("part of the daemon answers again", part=part)
            if why:
                self.problems[part] = why
            else:
                self.problems.pop(part, None)
        return set(self.problems) != before

    def _status_line(self) -> str:
        line = self.status()
        if self.problems:
            line += "; not answering: " + "; ".join(f"{p}: {w}" for p, w in self.problems.items())
        return line
