"""caixa's home (--home): every path under it, in one place, and the lock that keeps it to one
daemon. Steps receive the home's folder and find their own state here too (the search index,
argos packages, ultralytics' settings), so nothing else spells a file name under it."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from caixa.errors import HomeLockedError, HomeUnusableError


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def journal(self) -> Path:
        return self.root / "journal.sqlite3"

    @property
    def work(self) -> Path:
        """A folder per claimed job: its source and what its steps made."""
        return self.root / "work"

    @property
    def index(self) -> Path:
        """The search index the `index` step builds."""
        return self.root / "index.sqlite3"

    @property
    def lanes(self) -> Path:
        """The running daemon's lanes, for `caixa status`."""
        return self.root / "lanes.json"

    @property
    def pid(self) -> Path:
        """The daemon's pid, under its lock."""
        return self.root / "caixa.pid"

    @property
    def probe(self) -> Path:
        """A file the watcher touches to check its own threads answer."""
        return self.root / "watcher-probe"

    @property
    def argos(self) -> Path:
        """Argos Translate's packages and settings."""
        return self.root / "argos"

    @property
    def models(self) -> Path:
        """Models caixa assembles from packaged parts, once, then loads by path: Whisper base,
        the e5 embedder's ONNX files."""
        return self.root / "models"

    @property
    def ultralytics(self) -> Path:
        """ultralytics' settings and label font."""
        return self.root / "ultralytics"

    def require_used(self) -> None:
        """Refuse a home caixa never ran with: a mistyped --home is not made into a new one."""
        if not self.journal.exists():
            raise HomeUnusableError(
                f"no journal at {self.journal}: caixa has not run with this home"
                " (give --home or set CAIXA_HOME)"
            )

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One daemon per home: two would claim the same files."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.pid, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.pread(fd, 32, 0).decode().strip() or "?"
                raise HomeLockedError(
                    f"another caixa (pid {pid}) is running on {self.root}"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)
