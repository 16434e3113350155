"""Fixtures: a throwaway caixa world (rules, inboxes, home) and a real daemon subprocess.

Tests never sleep to let something happen, nor bound how long it takes: on a busy machine any
fixed time is wrong. They wait for the event itself (a log record, a journal state, a file, a
datagram) with `wait_until`, whose generous timeout only ends a test that hangs, and prove that
something did not happen against a later event (`World.wait_quiet_scan`). Speed is for bench/.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests import tiny_diffusion

PLUGINS = Path(__file__).parent / "plugins"
CAIXA = Path(sys.executable).parent / "caixa"
sys.path.insert(0, str(PLUGINS))  # the test steps, found through their entry points
T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """What was waited for did not happen: a hang, never a slow machine."""


def wait_until(what: Callable[[], T], timeout: float = 60, message: str = "") -> T:
    """What `what` returns once it is truthy: the one way a test waits for an event."""
    deadline = time.monotonic() + timeout
    while not (found := what()):
        if time.monotonic() > deadline:
            raise WaitTimeoutError(f"timed out after {timeout:g} s waiting for {message or what}")
        time.sleep(0.05)
    return found


class World:
    """A rules file, its inboxes and outputs, and a home, all under one temporary folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.rules = root / "rules.yaml"
        self.env = {
            **os.environ,
            "CAIXA_SETTLE_SECONDS": "0.3",
            "CAIXA_SCAN_INTERVAL": "2",
            "CAIXA_RETRY_BACKOFF": "0.2",
            "CAIXA_LOG_FORMAT": "json",
            "CAIXA_LOG_LEVEL": "debug",  # the scans' records, what tests prove absence against
            "PYTHONPATH": str(PLUGINS),
        }
        self.daemons: list[subprocess.Popen[bytes]] = []

    def write_rules(self, text: str) -> Path:
        self.rules.write_text(text)
        return self.rules

    def inbox(self, name: str = "in") -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    def caixa(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the real `caixa` command with this world's rules and home."""
        return subprocess.run(
            [str(CAIXA), *args],
            env=self.env,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def run_once(self, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        done = self.caixa(
            "run", "--once", "--rules", str(self.rules), "--home", str(self.home), timeout=timeout
        )
        assert done.returncode == 0, done.stderr
        return done

    def start(self, prefix: list[str] | None = None) -> subprocess.Popen[bytes]:
        """The daemon in the background; its log goes to home/daemon-N.log."""
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.home / f"daemon-{len(self.daemons)}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                *(prefix or []),
                str(CAIXA),
                "run",
                "--rules",
                str(self.rules),
                "--home",
                str(self.home),
            ],
            env=self.env,
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.daemons.append(proc)
        return proc

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON record the daemon and its workers wrote. They share one stderr, and now
        and then two records land on one line (seen under load), so a line is read record by
        record rather than as exactly one. A record a full disk cut short is not one: the log
        sink begins the next on a line of its own, unless another process wrote it, and then
        the next begins at the fragment's first `{"` that decodes."""
        records = []
        decoder = json.JSONDecoder()
        for path in sorted(self.home.glob("daemon-*.log")):
            # the last line may be a record still being written: only whole lines are read
            for line in path.read_text(errors="replace").split("\n")[:-1]:
                at = 0
                while line.startswith("{", at):
                    try:
                        record, at = decoder.raw_decode(line, at)
                    except json.JSONDecodeError:
                        at = line.find('{"', at + 1)
                        if at < 0:
                            break
                        continue
                    records.append(record)
        return records

    def raw_log(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.home.glob("daemon-*.log"))
        )

    def stop_all(self) -> None:
        for proc in self.daemons:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    # --- reading the journal as a user's tool would ---------------------------------------

    def query(self, sql: str, *args: Any) -> list[sqlite3.Row]:
        db = sqlite3.connect(f"file:{self.home / 'journal.sqlite3'}?mode=ro", uri=True, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def states(self) -> dict[str, int]:
        try:
            rows = self.query("SELECT state, COUNT(*) FROM jobs GROUP BY state")
        except sqlite3.OperationalError:  # the daemon has not created its journal yet
            return {}
        return {r[0]: r[1] for r in rows}

    def finished(self) -> int:
        s = self.states()
        return s.get("done", 0) + s.get("duplicate", 0) + s.get("failed", 0)

    def wait_for(self, what: Callable[[], T], timeout: float = 60, message: str = "") -> T:
        """What `what` returns once it is truthy; a daemon that died fails the test at once."""

        def alive_and_found() -> T:
            for proc in self.daemons:
                assert proc.poll() in (None, 0, -9, -15), f"daemon died: {self.raw_log()[-3000:]}"
            return what()

        try:
            return wait_until(alive_and_found, timeout, message)
        except WaitTimeoutError as exc:
            raise WaitTimeoutError(f"{exc}; states {self.states()}") from None

    def wait_log(
        self, event: str, after: int = 0, timeout: float = 60, **fields: Any
    ) -> tuple[int, dict[str, Any]]:
        """The first record of `event` with these fields at or after position `after` in
        `logs()`, and its position (`len(world.logs())` marks what came before)."""

        def found() -> tuple[int, dict[str, Any]] | None:
            for at, record in enumerate(self.logs()[after:], after):
                if record.get("event") == event and all(
                    record.get(k) == v for k, v in fields.items()
                ):
                    return at, record
            return None

        return self.wait_for(found, timeout, f"the log record {event!r} {fields or ''}")

    def wait_quiet_scan(self, timeout: float = 60) -> None:
        """Absence, proven against an event: a full scan of the inboxes that began after this
        call has finished and left no candidate. A file a scan finds stays a candidate until it
        is taken or left alone, and taking it records its job first; so whatever the daemon
        would take (again) shows in the journal once such a scan is over."""
        first, _ = self.wait_log("scan finished", len(self.logs()), timeout, polled_only=False)
        # that scan may have begun before this call; the next ones began after it
        self.wait_log("scan finished", first + 1, timeout, polled_only=False, candidates=0)

    def manifests(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.outputs.rglob("manifest.json"))]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.stop_all()


@pytest.fixture(scope="session")
def tiny_sd(pytestconfig: pytest.Config) -> Path:
    """A tiny Stable Diffusion folder, built once per version of its builder and cached."""
    version = hashlib.sha256(Path(tiny_diffusion.__file__).read_bytes()).hexdigest()[:12]
    folder = pytestconfig.cache.mkdir(f"tiny-sd-{version}") / "tiny-sd"
    if not (folder / "model_index.json").exists():
        tiny_diffusion.build(folder)
    return folder
