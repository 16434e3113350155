"""Helpers shared by the benchmarks: a rules file, the real daemon as a subprocess, reading the
journal with sqlite3, a bare watchdog observer in its own process (the raw reference),
percentiles, a start timed in new processes, and the results JSON under bench/results/.

`python bench/_common.py watch OUT.json MOVE_TO DIR...` is that bare observer: it records the
time of each close-after-write event per file name, writes them to OUT.json when sent SIGTERM,
and, unless MOVE_TO is "-", renames each closed file into MOVE_TO as a claim does.
Run with no arguments it does nothing (so `make bench` can run every bench/*.py).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
CAIXA = Path(sys.executable).parent / "caixa"  # the console script; cli has no __main__


def write_rules(root: Path, inboxes: Sequence[str], steps: Sequence[str] = ("copy",)) -> Path:
    """`root/rules.yaml` with one rule per name, watching `root/inbox/<name>` (created)."""
    lines = ["version: 1", "rules:"]
    for name in inboxes:
        (root / "inbox" / name).mkdir(parents=True, exist_ok=True)
        lines += [
            f"  - name: {name}",
            f"    inbox: inbox/{name}",
            f"    steps: [{', '.join(steps)}]",
        ]
    rules = root / "rules.yaml"
    rules.write_text("\n".join(lines) + "\n")
    return rules


def caixa_command(
    rules: Path, home: Path, *, once: bool = False, wrapper: Sequence[str] = ()
) -> list[str]:
    once_flag = ["--once"] if once else []
    return [*wrapper, str(CAIXA), "run", "--rules", str(rules), "--home", str(home), *once_flag]


def caixa_env(**settings: object) -> dict[str, str]:
    """This environment without any inherited CAIXA_*, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAIXA_")}
    env.update({f"CAIXA_{key.upper()}": str(value) for key, value in settings.items()})
    return env


def stop(proc: subprocess.Popen[Any], timeout: float = 15) -> int:
    """SIGTERM, then SIGKILL if it does not exit in time; the exit status (negative: signal)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  warning: pid {proc.pid} ignored SIGTERM for {timeout} s; killed")
            proc.kill()
            proc.wait()
    return proc.returncode


def wait_for(
    done: Callable[[], bool], proc: subprocess.Popen[Any] | None, timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.05)


@contextmanager
def daemon(rules: Path, home: Path, **settings: object) -> Iterator[subprocess.Popen[bytes]]:
    """`caixa run` (no --once) logging to HOME.log; yields once it watches, stops it after."""
    log = home.with_suffix(".log")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            caixa_command(rules, home), env=caixa_env(**settings), stdout=out, stderr=out
        )
    try:
        wait_for(lambda: b'"watching"' in log.read_bytes(), proc, 60, "the daemon to start")
        yield proc
    finally:
        stop(proc)


def journal(home: Path, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
    """Rows from HOME/journal.sqlite3 (empty when it does not exist yet)."""
    path = home / "journal.sqlite3"
    if not path.exists():
        return []
    db = sqlite3.connect(path, timeout=30)
    try:
        db.row_factory = sqlite3.Row
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def wait_for_jobs(
    home: Path,
    n: int,
    proc: subprocess.Popen[Any] | None,
    timeout: float,
    states: Sequence[str] = (),
) -> list[sqlite3.Row]:
    """Wait until the journal holds at least `n` jobs (in one of `states`, if given)."""
    where = f"WHERE state IN ({','.join('?' * len(states))})" if states else ""
    sql = f"SELECT id, state, name, created_at, finished_at FROM jobs {where}"
    rows: list[sqlite3.Row] = []

    def enough() -> bool:
        nonlocal rows
        rows = journal(home, sql, states)
        return len(rows) >= n

    wait_for(enough, proc, timeout, f"{n} jobs {'/'.join(states)} in {home}")
    return rows


@contextmanager
def raw_watcher(
    out: Path, dirs: Sequence[Path], move_to: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A bare watchdog Observer on `dirs` in its own process; yields once it watches. Its
    close times ({file name: time.time()}) are in `out` after the block. With `move_to`, each
    closed file is renamed there at once (out of the watched folder, as a claim does)."""
    command = [sys.executable, __file__, "watch", str(out), str(move_to or "-"), *map(str, dirs)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the raw watchdog observer did not start")
        yield proc
    finally:
        stop(proc)


def _watch(out: Path, move_to: str, dirs: list[str]) -> None:
    from watchdog.events import FileClosedEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    closed: dict[str, float] = {}

    class Handler(FileSystemEventHandler):
        def on_closed(self, event: FileClosedEvent) -> None:
            src = Path(os.fsdecode(event.src_path))
            closed[src.name] = time.time()
            if move_to != "-":
                os.rename(src, Path(move_to) / src.name)

    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads inherit the mask
    observer = Observer()
    for folder in dirs:
        observer.schedule(Handler(), folder)
    observer.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM})  # no polling: this process stays as idle as watchdog is
    observer.stop()
    observer.join()
    out.write_text(json.dumps(closed))


def percentile(values: Sequence[float], p: int) -> float:
    """The p-th percentile (1..99), inclusive method."""
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def timed(run: Callable[[], object], times: int) -> list[float]:
    """Milliseconds each of `times` calls of `run` took."""
    found = []
    for _ in range(times):
        started = time.perf_counter()
        run()
        found.append((time.perf_counter() - started) * 1000)
    return found


def first_runs(
    name: str, code: str, args: Sequence[str], runs: int, line: Callable[[dict[str, Any]], str]
) -> None:
    """A start as every worker and every command pays it: `code` run by new Python processes,
    `runs` times each way, alternating: with no home (the library's own way) and with a home
    whose copy a first run made (not timed). `code` takes the home ("": none) and `args`, and
    prints [seconds, what it found] as JSON. The figures (median seconds of each way, their
    ratio, whether both found the same, what caixa found) are printed by `line` and saved."""

    def run(home: str) -> tuple[float, Any]:
        done = subprocess.run(
            [sys.executable, "-c", code, home, *args], capture_output=True, text=True, check=True
        )
        seconds, found = json.loads(done.stdout)
        return seconds, found

    with tempfile.TemporaryDirectory(prefix="caixa-bench-home-") as home:
        run(home)
        plain, ours = [], []
        for _ in range(runs):
            seconds, plain_found = run("")
            plain.append(seconds)
            seconds, our_found = run(home)
            ours.append(seconds)
    plain_s, ours_s = statistics.median(plain), statistics.median(ours)
    figures = {
        "runs": runs,
        "plain_s": round(plain_s, 3),
        "caixa_s": round(ours_s, 3),
        "ratio": ratio(plain_s, ours_s),
        "same": plain_found == our_found,
        "found": our_found,
    }
    print(line(figures))
    save(name, figures)


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b > 0 else None


def save(name: str, figures: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"figures written to {path}")


if __name__ == "__main__" and sys.argv[1:2] == ["watch"]:
    _watch(Path(sys.argv[2]), sys.argv[3], sys.argv[4:])


def plain_efficientnet() -> tuple[Any, Callable[[Any], Any]]:
    """efficientnet-lite0 and its preprocessing as its own library runs them: the plain
    reference the classify figures are measured against."""
    from efficientnet_lite_pytorch import EfficientNet
    from torchvision import transforms

    from caixa import models

    weights = str(models.locate("efficientnet-lite0"))
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights).eval()
    prepare = transforms.Compose(
        [
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize([127 / 255] * 3, [128 / 255] * 3),
        ]
    )
    return net, prepare
