"""The lanes as the running daemon sees them, for `caixa status`: a small JSON file in its home.

Jobs live in the journal; this file holds only what exists while the daemon runs (its worker
processes, the models they hold, the accelerator queue by model, swaps, recent throughput).
It is replaced atomically at most a few times a second, and removed when the daemon stops;
a file left by a daemon that was killed names a pid that no longer runs, and reads as None.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from caixa.daemon.fsutil import atomic_write_bytes, remove_stale_temps
from caixa.home import Home

RECENT_SECONDS = 600.0  # the window of "recent throughput"
WRITE_EVERY = 0.2


class Throughput:
    """Steps finished lately, by name. Thread-safe."""

    def __init__(self, window: float = RECENT_SECONDS) -> None:
        self.window = window
        self.since = time.time()
        self._done: deque[tuple[float, str, float]] = deque()
        self._lock = threading.Lock()

    def record(self, step: str, seconds: float) -> None:
        with self._lock:
            self._done.append((time.time(), step, seconds))

    def summary(self) -> dict[str, dict[str, float]]:
        now = time.time()
        with self._lock:
            while self._done and self._done[0][0] < now - self.window:
                self._done.popleft()
            done = list(self._done)
        minutes = min(self.window, now - self.since) / 60
        out: dict[str, dict[str, float]] = {}
        for _, step, seconds in done:
            entry = out.setdefault(step, {"count": 0, "seconds": 0.0})
            entry["count"] += 1
            entry["seconds"] += seconds
        for entry in out.values():
            entry["per_minute"] = round(entry["count"] / max(minutes, 1 / 60), 2)
            entry["seconds"] = round(entry["seconds"] / entry["count"], 3)  # mean per step
        return out


class StateFile:
    """Writes `snapshot()` to the home's state file soon after each `touch()`, from its own
    thread, so the lanes never wait on the disk."""

    def __init__(self, home: Path, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.path = Home(home).lanes
        self.snapshot = snapshot
        self._dirty = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="caixa-state", daemon=True)

    def start(self) -> None:
        remove_stale_temps(self.path)  # a daemon killed mid-write left it
        self._thread.start()
        self.touch()

    def touch(self) -> None:
        self._dirty.set()

    def _loop(self) -> None:
        while True:
            self._dirty.wait()
            if self._closing.is_set():
                return
            self._dirty.clear()
            with contextlib.suppress(OSError):  # a view only: the next change writes it again
                self._write()
            self._closing.wait(WRITE_EVERY)  # a write at most this often; a stop need not wait

    def _write(self) -> None:
        data = {"pid": os.getpid(), "updated_at": time.time(), **self.snapshot()}
        atomic_write_bytes(self.path, json.dumps(data, indent=1).encode(), sync=False)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._closing.set()
        self._dirty.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)


def read(home: Path) -> dict[str, Any] | None:
    """The running daemon's lanes, or None when no daemon runs on this home."""
    try:
        data = json.loads((Home(home).lanes).read_text())
        # alive even when it runs as another user (caixa, under the system unit): EPERM
        with contextlib.suppress(PermissionError):
            os.kill(data["pid"], 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return data


def describe(data: dict[str, Any] | None, now: float | None = None) -> list[str]:
    """The lanes in a few lines for a person: what each worker does and holds, and what waits."""
    if data is None:
        return ["lanes: no daemon runs on this home"]
    now = time.time() if now is None else now
    lines = [
        f"daemon: pid {data['pid']}, models kept {data['keep_alive']:g} s after use,"
        f" swap bound {data['swap_bound']} steps"
    ]
    if data.get("log_records_dropped"):
        lines.append(f"log: {data['log_records_dropped']} records could not be written (dropped)")
    lines += cluster_lines(data.get("cluster"))
    for lane, info in data["lanes"].items():
        workers = info["workers"]
        waiting = info["waiting"]
        if isinstance(waiting, dict):
            queue = ", ".join(f"{m} {n}" for m, n in sorted(waiting.items())) or "nothing"
            tail = f"waiting: {queue}; {info['swaps']} model loads so far"
        else:
            tail = f"{waiting} waiting"
        restarts = sum(w["restarts"] for w in workers)
        lines.append(f"{lane} lane: {tail}; {restarts} worker restarts")
        for w in workers:
            lines.append("  " + _worker_line(w, now))
    if data["steps"]:
        lines.append(f"steps done in the last {RECENT_SECONDS / 60:g} min:")
    for step, s in sorted(data["steps"].items()):
        lines.append(f"  {step}: {s['count']} ({s['per_minute']:g}/min, {s['seconds']:.3g} s each)")
    return lines


def cluster_lines(cluster: dict[str, Any] | None) -> list[str]:
    """The Ray cluster the accelerator lane uses, for `caixa status` and `caixa doctor`:
    whether it answers, and each node's resources and models; [] when none is set."""
    if not cluster:
        return []
    state, nodes = cluster["state"], cluster["nodes"]
    if state == "connected":
        head = f"ray cluster {cluster['address']}: connected, {len(nodes)} node(s) take model steps"
    else:
        head = (
            f"ray cluster {cluster['address']}: {state} ({cluster['why'] or 'starting'});"
            " model steps run on this machine"
        )
    lines = [head]
    for n in nodes:
        resources = ", ".join(
            f"{k} {v:g}"
            for k, v in sorted(n["resources"].items())
            if "node:" not in k and "memory" not in k
        )
        held = ", ".join(r["model"] for r in n["resident"]) or "no model"
        lacks = f"; lacks {', '.join(sorted(n['lacks']))}" if n["lacks"] else ""
        lines.append(f"  node {n['node']} ({n['node_id'][:8]}): {resources}; holds {held}{lacks}")
    return lines


def _worker_line(w: dict[str, Any], now: float) -> str:
    if w["pid"] is None:
        return f"{w['name']}: not started"
    threads = f"{w['threads']} thread{'s' if w['threads'] > 1 else ''}"
    where = f"{w['device'] or 'starting'}, {threads}"
    doing = "idle"
    if w["job"]:
        model = f", model {w['model']}" if w["model"] else ""
        done = f", {w['progress']:.0%} done" if w.get("progress") is not None else ""
        took = f"{now - w['busy_since']:.0f} s{done}"
        doing = f"running {w['step']} for job {w['job']}{model} ({took})"
    held = [
        f"{r['model']} (loaded {now - r['loaded_at']:.0f} s ago"
        + (f", {r['size'] / 2**20:.0f} MB" if r["size"] else "")
        + ")"
        for r in w["resident"]
    ]
    holds = f"; holds {', '.join(held)}" if held else ""
    gpu = f"; GPU {w['gpu_bytes'] / 2**20:.0f} MB" if w["gpu_bytes"] is not None else ""
    return f"{w['name']} pid {w['pid']} ({where}): {doing}{holds}{gpu}"
