"""Idle cost: a daemon watching 3 empty inboxes with default settings (scan every 30 s, ...) over
60 s: CPU % (process CPU time / wall time), RSS in MB and wake-ups (context switches) per
second, against a bare watchdog Observer on the same 3 folders in its own process over the same
60 s.

Target: caixa CPU <= 1 %.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import psutil
from _common import daemon, ratio, raw_watcher, save, write_rules

SECONDS = 60.0
INBOXES = ["a", "b", "c"]
TARGET_CPU_PCT = 1.0


def usage(proc: psutil.Process) -> tuple[float, int]:
    """CPU seconds (user + system) and context switches of all its threads so far."""
    switches = 0
    for status in Path(f"/proc/{proc.pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if "ctxt_switches:" in line:
                switches += int(line.split()[1])
    cpu = proc.cpu_times()
    return cpu.user + cpu.system, switches


def show(value: float | None) -> str:
    return "n/a (raw is 0)" if value is None else f"{value}x"


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="caixa-bench-idle-") as tmp:
        root = Path(tmp)
        rules = write_rules(root, INBOXES)
        inboxes = [root / "inbox" / name for name in INBOXES]
        with daemon(rules, root / "home") as cx, raw_watcher(root / "raw.json", inboxes) as raw:
            procs = {"caixa": psutil.Process(cx.pid), "raw": psutil.Process(raw.pid)}
            time.sleep(2.0)  # past start-up
            before = {name: usage(p) for name, p in procs.items()}
            start = time.monotonic()
            time.sleep(SECONDS)
            wall = time.monotonic() - start
            after = {name: usage(p) for name, p in procs.items()}
            rss = {name: p.memory_info().rss / 2**20 for name, p in procs.items()}
    figures: dict[str, object] = {"seconds": round(wall, 1), "inboxes": len(INBOXES)}
    for name in procs:
        figures[name] = {
            "cpu_pct": round(100 * (after[name][0] - before[name][0]) / wall, 3),
            "rss_mb": round(rss[name], 1),
            "wakeups_per_s": round((after[name][1] - before[name][1]) / wall, 1),
        }
    c, r = figures["caixa"], figures["raw"]
    assert isinstance(c, dict) and isinstance(r, dict)
    figures["ratio"] = {key: ratio(c[key], r[key]) for key in c}
    figures["target_met"] = c["cpu_pct"] <= TARGET_CPU_PCT
    print(f"idle: {len(INBOXES)} empty inboxes, default settings, {wall:.0f} s")
    for key, unit in (("cpu_pct", "%"), ("rss_mb", " MB"), ("wakeups_per_s", "/s")):
        print(
            f"  {key}: caixa {c[key]}{unit} | raw watchdog {r[key]}{unit}"
            f" | ratio caixa/raw {show(figures['ratio'][key])}"
        )
    print(f"  target CPU <= {TARGET_CPU_PCT} %: {'MET' if figures['target_met'] else 'NOT MET'}")
    save("idle", figures)


if __name__ == "__main__":
    main()
