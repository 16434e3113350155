"""Fixtures: a throwaway caixa world (rules, inboxes, home) and a real daemon subprocess."""

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
from typing import Any

import pytest

from tests import tiny_diffusion

PLUGINS = Path(__file__).parent / "plugins"
CAIXA = Path(sys.executable).parent / "caixa"
sys.path.insert(0, str(PLUGINS))  # the test steps, found through their entry points


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
        record rather than as exactly one."""
        records = []
        decoder = json.JSONDecoder()
        for path in sorted(self.home.glob("daemon-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                at = 0
                while line.startswith("{", at):
                    record, at = decoder.raw_decode(line, at)
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

    def wait_for(self, what: Callable[[], bool], timeout: float = 60, message: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what():
                return
            for proc in self.daemons:
                assert proc.poll() in (None, 0, -9, -15), f"daemon died: {self.raw_log()[-3000:]}"
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {message or what}; states {self.states()}")

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
