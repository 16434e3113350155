"""Room to write, as a state of the daemon: a full disk or a filesystem remounted read-only
pauses intake and steps, says why, and ends by itself when the cause is gone.

Two ways in: a look at every filesystem caixa writes to (the home: journal, work area, index;
the outputs; processed/ and failed/), each needing a free-space floor; and a write that failed
for lack of room (ENOSPC, EDQUOT, EROFS, EIO, or SQLite's "database or disk is full", "attempt
to write a readonly database", "disk I/O error"). Either pauses; the pause ends once every
look passes again and, after a failed write, a short wait has passed (doubling while writes
keep failing, so a disk that lies about its room costs one try every so often, not a busy
loop), or at once when a MiB has been freed since. One log record when a pause starts, one
when it ends.

The floor (`CAIXA_MIN_FREE`, default `auto`): 1 GiB or 5% of the filesystem, whichever is
smaller. 1 GiB holds what one job of the heaviest steps writes at once (a long WAV, a page of
images, the index's WAL while it grows) with room left for the journal's next commits; 5%
keeps a small filesystem (an SD card, a 40 MB test tmpfs) usable rather than paused forever.
Space is counted as an unprivileged user sees it (f_bavail): root's reserve is not ours.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from caixa import log
from caixa.errors import NoRoomError

logger = log.get("caixa.space")

GIB = 2**30
AUTO_BYTES = GIB
AUTO_SHARE = 0.05
FIRST_WAIT = 2.0  # seconds after a failed write before writing is tried again
LONGEST_WAIT = 60.0
FREED = 2**20  # bytes freed since a write failed that are worth trying again at once
TRIED = 3.0  # seconds of writes without a failure that end a pause caused by failed writes
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$")


def floor(setting: str, total: int) -> int:
    """Bytes that must stay free on a filesystem of `total` bytes: `auto`, a size with K/M/G/T
    (binary), or a share like `5%`."""
    setting = setting.strip().upper()
    if setting == "AUTO":
        return min(AUTO_BYTES, int(total * AUTO_SHARE))
    if setting.endswith("%"):
        return int(total * float(setting[:-1]) / 100)
    found = _SIZE.match(setting)
    if not found:
        raise ValueError(f"not a size: {setting!r} (use auto, 500M, 2G or 5%)")
    number, unit = found.groups()
    return int(float(number) * 1024 ** "_KMGT".index(unit or "_"))


def size_text(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit in ("bytes", "KB", "MB") else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # the loop returns


def need_text(n: int) -> str:
    """A floor as a person set it: 1 GiB, 2 MiB."""
    for unit, size in (("GiB", GIB), ("MiB", 2**20), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    return f"{n} bytes"


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem `path` (or its nearest existing parent) lives on."""
    path = Path(os.path.realpath(next(p for p in (path, *path.parents) if p.exists())))
    while not os.path.ismount(path):
        path = path.parent
    return path


def free_total(paths: Iterable[Path]) -> int:
    """Bytes free on the filesystems of `paths`, each counted once."""
    seen: dict[int, int] = {}
    for path in paths:
        try:
            existing = next(p for p in (path, *path.parents) if p.exists())
            st = os.statvfs(existing)
            seen[existing.stat().st_dev] = st.f_bavail * st.f_frsize
        except (OSError, StopIteration):
            continue
    return sum(seen.values())


def look(paths: Iterable[Path], min_free: str) -> list[str]:
    """Why caixa cannot write now, one line per filesystem that is short; empty when all fit."""
    seen: set[int] = set()
    short = []
    for path in paths:
        try:
            existing = next(p for p in (path, *path.parents) if p.exists())
            st = os.statvfs(existing)
            dev = existing.stat().st_dev
        except (OSError, StopIteration):
            continue  # a folder that cannot be looked at is found out by the write itself
        if dev in seen:
            continue
        seen.add(dev)
        where = mount_point(existing)
        if st.f_flag & os.ST_RDONLY:
            short.append(f"{where} is read-only")
            continue
        free = st.f_bavail * st.f_frsize
        need = floor(min_free, st.f_blocks * st.f_frsize)
        if free < need:
            short.append(f"disk full on {where} ({size_text(free)} free, needs {need_text(need)})")
    return short


class Room:
    """The daemon's pause for room: `check()` from its loop, `failed()` from any thread whose
    write failed for lack of room. Thread-safe.

    A pause is one episode however many tries it takes: it is logged when it starts, and its
    end only once writes have been tried again and gone through for a while (TRIED)."""

    def __init__(self, paths: Callable[[], list[Path]], min_free: str) -> None:
        self.paths = paths
        self.min_free = min_free
        self._lock = threading.Lock()
        self._short: list[str] = []
        self._write_failed: str | None = None
        self._retry_at = 0.0
        self._free_then = 0  # bytes free when a write last failed
        self._wait = FIRST_WAIT
        self._last_failure = float("-inf")
        self._tried_at = float("-inf")  # when writing was last tried again after a failure
        self._since: float | None = None  # when the episode logged as begun began

    @property
    def paused(self) -> str | None:
        """Why work waits, as a person reads it ("paused: disk full on /srv (...)"), or None."""
        with self._lock:
            why = self._short or ([self._write_failed] if self._write_failed else [])
        return "paused: " + "; ".join(why) if why else None

    def failed(self, exc: BaseException) -> None:
        """A write failed for lack of room: pause now; writing is tried again after a wait."""
        now = time.monotonic()
        short = look(self.paths(), self.min_free)  # a full disk is said as such, with figures
        free = free_total(self.paths())
        with self._lock:
            self._short = short
            if now - self._last_failure > 2 * LONGEST_WAIT:  # a new episode: start short again
                self._wait = FIRST_WAIT
            self._last_failure = now
            self._write_failed = f"cannot write: {_reason(exc)}"
            self._retry_at = now + self._wait
            self._free_then = free
            self._wait = min(self._wait * 2, LONGEST_WAIT)
        self._say()

    def check(self) -> str | None:
        """Look at every filesystem again; return the pause, if any."""
        short = look(self.paths(), self.min_free)
        free = free_total(self.paths())
        with self._lock:
            self._short = short
            # try again when the wait is over, or at once when room was made meanwhile
            due = time.monotonic() >= self._retry_at or free >= self._free_then + FREED
            if self._write_failed and not short and due:
                self._write_failed = None  # try writing again; a new failure pauses again
                self._tried_at = time.monotonic()
        self._say()
        return self.paused

    def _say(self) -> None:
        """Log an episode's start, and its end once writes have gone through for TRIED s."""
        why = self.paused
        now = time.monotonic()
        with self._lock:
            starts = why is not None and self._since is None
            quiet = now - max(self._last_failure, self._tried_at) >= TRIED
            ends = why is None and self._since is not None and quiet
            if starts:
                self._since = now
            waited = now - (self._since or now)
            if ends:
                self._since = None
        if starts:
            logger.warning(
                f"{why}; intake and steps wait, every file is kept, work resumes by itself",
                paused=True,
            )
        if ends:
            logger.info("room to write again; work resumes", paused=False, seconds=round(waited))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno is not None:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{os.strerror(exc.errno).lower()}{where}"
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, NoRoomError) and cause is not None:
        return _reason(cause)
    return str(exc) or type(exc).__name__
