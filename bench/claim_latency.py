"""Claim latency: from a file's close in an inbox to its job being claimed by the daemon
(jobs.created_at in the journal), p50 and p99 over 500 files on local disk written one at a
time at a steady pace, against a bare watchdog Observer (close -> on_closed event) for the same
writes in the same run. A burst (500 files as fast as possible) is reported as information, and
so is the bare observer renaming each closed file out of the folder (what a claim does): watchdog
holds an unpaired IN_MOVED_FROM for 0.5 s to pair it, and later events queue behind it.

Target: caixa p50 <= 100 ms and p99 <= 1 s (paperless-ngx waits 5 s by default).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from _common import daemon, percentile, ratio, raw_watcher, save, wait_for_jobs, write_rules

FILES = 500
PACE_S = 0.015  # one file every 15 ms in the steady case
TARGET_P50_MS, TARGET_P99_MS = 100.0, 1000.0


def write_files(folder: Path, prefix: str, pace: float) -> dict[str, float]:
    """FILES distinct small files, one every `pace` s (0: at once); name -> time.time() at close."""
    closed: dict[str, float] = {}
    start = time.monotonic()
    for i in range(FILES):
        if pace:
            time.sleep(max(0.0, start + i * pace - time.monotonic()))
        name = f"{prefix}{i:04d}.txt"
        with open(folder / name, "wb") as f:
            f.write(f"file {prefix}{i} {time.time()}\n".encode() * 32)
        closed[name] = time.time()
    return closed


def stats(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(latencies, 50) * 1e3, 2),
        "p99_ms": round(percentile(latencies, 99) * 1e3, 2),
        "max_ms": round(max(latencies) * 1e3, 2),
        "n": len(latencies),
    }


def raw_case(root: Path, prefix: str, pace: float, move: bool = False) -> dict[str, float]:
    folder, moved = root / f"raw-{prefix}-{move}", root / f"raw-{prefix}-{move}-moved"
    folder.mkdir()
    moved.mkdir()
    events = root / f"raw-{prefix}-{move}.json"
    with raw_watcher(events, [folder], moved if move else None):
        closed = write_files(folder, prefix, pace)
        time.sleep(1.0)  # let the last events arrive
    seen = json.loads(events.read_text())
    return stats([seen[name] - t for name, t in closed.items() if name in seen])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="caixa-bench-claim-") as tmp:
        root = Path(tmp)
        raw = {
            "steady": raw_case(root, "s", PACE_S),
            "burst": raw_case(root, "b", 0),
            "steady_rename_out": raw_case(root, "s", PACE_S, move=True),
        }
        rules, home, inbox = write_rules(root, ["lat"]), root / "home", root / "inbox" / "lat"
        caixa: dict[str, dict[str, float]] = {}
        with daemon(rules, home) as proc:
            for case, prefix, pace, total in (
                ("steady", "s", PACE_S, FILES),
                ("burst", "b", 0, 2 * FILES),
            ):
                closed = write_files(inbox, prefix, pace)
                rows = wait_for_jobs(home, total, proc, 120, states=("done",))
                claimed = {r["name"]: r["created_at"] for r in rows if r["name"] in closed}
                caixa[case] = stats([claimed[name] - t for name, t in closed.items()])
    figures: dict[str, object] = {"files": FILES, "pace_s": PACE_S, "caixa": caixa, "raw": raw}
    print(f"claim_latency: {FILES} files, local disk, rule steps: [copy]")
    for case, label in (
        ("steady", f"steady (1 file / {PACE_S * 1e3:.0f} ms)"),
        ("burst", "burst (info)"),
    ):
        c, r = caixa[case], raw[case]
        r50, r99 = ratio(c["p50_ms"], r["p50_ms"]), ratio(c["p99_ms"], r["p99_ms"])
        figures[f"{case}_ratio"] = {"p50": r50, "p99": r99}
        print(
            f"  {label}: caixa p50 {c['p50_ms']:.1f} ms p99 {c['p99_ms']:.1f} ms"
            f" (max {c['max_ms']:.1f}) | raw watchdog p50 {r['p50_ms']:.2f} ms"
            f" p99 {r['p99_ms']:.2f} ms | ratio caixa/raw p50 {r50}x p99 {r99}x"
        )
    m = raw["steady_rename_out"]
    print(
        f"  info: raw watchdog renaming each file out on its close event, steady:"
        f" p50 {m['p50_ms']:.1f} ms p99 {m['p99_ms']:.1f} ms"
    )
    ok = caixa["steady"]["p50_ms"] <= TARGET_P50_MS and caixa["steady"]["p99_ms"] <= TARGET_P99_MS
    figures["target_met"] = ok
    print(
        f"  target steady p50 <= {TARGET_P50_MS:.0f} ms, p99 <= {TARGET_P99_MS:.0f} ms:"
        f" {'MET' if ok else 'NOT MET'}"
    )
    save("claim_latency", figures)


if __name__ == "__main__":
    main()
