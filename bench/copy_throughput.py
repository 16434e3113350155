"""Copy throughput: files/s of a `copy` rule on 5,000 small files (1-4 KB, distinct content),
timed from the start of `caixa run --once` to its exit, against in the same run (a) a plain
Python loop (shutil.copy2 to an output folder, then the source renamed away) and (b) that loop
made durable (fsync of each file and of each directory changed, as caixa does). Under
`eatmydata` (fsync made a no-op), if installed, caixa runs once more to show what durability
costs. A short profile: the run's phases from the journal, and fsyncs per file under strace.

A virtual machine's disk often flushes in microseconds (its host's cache); a PC's does not.
With a C compiler, caixa and the durable loop run again on a modelled disk whose flush takes
FLUSH_US (slowsync.c, preloaded: a flush asked for while one is under way waits for the next
one, which serves all asked for meanwhile, as ext4's journal does): what caixa's group commit
and its phases in parallel are worth where a flush costs what it costs at home.

Target: caixa >= 0.5x the durable loop (b).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _common import caixa_command, caixa_env, journal, ratio, save, stop, write_rules

from caixa.daemon.fsutil import fsync_dir, fsync_file

FILES = 5000
SETTLE_S = 0.2  # CAIXA_SETTLE_SECONDS: files found by the startup scan wait this long
PROFILE_FILES = 200  # files in the strace run
MODELLED_FILES = 1000  # files in each run on the modelled disk
FLUSH_US = (500, 2000)  # a modelled flush: an NVMe drive's, a SATA SSD's
TARGET = 0.5


def make_files(folder: Path, n: int) -> None:
    rng = random.Random(42)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"f{i:05d}.bin").write_bytes(rng.randbytes(rng.randint(1024, 4096)))


def copy_loop(root: Path, durable: bool, n: int = FILES) -> float:
    """The reference: every file copied out and its source moved away; seconds taken."""
    inbox, out, done = root / "inbox", root / "out", root / "processed"
    make_files(inbox, n)
    out.mkdir()
    done.mkdir()
    os.sync()  # leave no dirty pages from making the files to the timed part
    start = time.perf_counter()
    for entry in os.scandir(inbox):
        target = out / entry.name
        shutil.copy2(entry.path, target)
        if durable:
            fsync_file(target)
            fsync_dir(out)
        os.rename(entry.path, done / entry.name)
        if durable:
            fsync_dir(done)
            fsync_dir(inbox)
    return time.perf_counter() - start


def caixa_once(
    root: Path, n: int, wrapper: Sequence[str] = (), env: dict[str, str] | None = None
) -> tuple[float, float]:
    """`caixa run --once` on n files with a copy rule: seconds from start to exit, and the
    unix time it started."""
    rules, home = write_rules(root, ["c"]), root / "home"
    make_files(root / "inbox" / "c", n)
    os.sync()
    command = caixa_command(rules, home, once=True, wrapper=wrapper)
    environ = caixa_env(settle_seconds=SETTLE_S) | (env or {})
    with (root / "caixa.log").open("wb") as log:
        started, start = time.time(), time.perf_counter()
        proc = subprocess.Popen(command, env=environ, stderr=log)
        try:
            proc.wait(600)
        finally:
            stop(proc)
        seconds = time.perf_counter() - start
    done = journal(home, "SELECT COUNT(*) FROM jobs WHERE state = 'done'")[0][0] if n else 0
    if proc.returncode != 0 or done != n:
        raise RuntimeError(f"caixa exited {proc.returncode} with {done}/{n} done; see its log")
    return seconds, started


def phases(root: Path, started: float) -> dict[str, float]:
    """Wall-clock phases of the caixa run from its journal (unix times)."""
    (row,) = journal(
        root / "home",
        "SELECT MIN(created_at), MAX(created_at), MAX(finished_at), AVG(finished_at - created_at)"
        " FROM jobs",
    )
    first, last, finished, per_job = row
    return {
        "start_to_first_claim_s": round(first - started, 3),
        "claiming_s": round(last - first, 3),
        "last_claim_to_last_done_s": round(finished - last, 3),
        "mean_claim_to_done_s": round(per_job, 3),
    }


def fsyncs_per_file(root: Path) -> float | None:
    """fsync + fdatasync calls per file in a small caixa run under strace (None: no strace)."""
    if not shutil.which("strace"):
        return None
    calls = root / "strace.txt"
    caixa_once(
        root, PROFILE_FILES, ["strace", "-f", "-c", "-o", str(calls), "-e", "fsync,fdatasync"]
    )
    counts = [int(line.split()[3]) for line in calls.read_text().splitlines() if "sync" in line]
    return round(sum(counts) / PROFILE_FILES, 1)


def modelled_disk(root: Path) -> dict[str, dict[str, float | None]] | None:
    """caixa against the durable loop, both on the modelled disk, for each FLUSH_US; None
    without a C compiler."""
    cc = shutil.which("cc")
    if cc is None:
        return None
    shim = root / "slowsync.so"
    source = Path(__file__).with_name("slowsync.c")
    subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", shim, source, "-lpthread"], check=True)
    found = {}
    for us in FLUSH_US:
        env = {"LD_PRELOAD": str(shim), "SLOWSYNC_US": str(us)}
        folder = root / f"flush-{us}"
        loop = subprocess.run(
            [sys.executable, __file__, "durable-loop", str(folder / "loop"), str(MODELLED_FILES)],
            env=os.environ | env,
            check=True,
            capture_output=True,
            text=True,
        )
        durable = MODELLED_FILES / float(loop.stdout)
        caixa = MODELLED_FILES / caixa_once(folder / "caixa", MODELLED_FILES, env=env)[0]
        found[f"{us / 1000:g} ms"] = {
            "caixa": round(caixa, 1),
            "durable": round(durable, 1),
            "ratio_to_durable": ratio(caixa, durable),
        }
    return found


def main() -> None:
    figures: dict[str, object] = {"files": FILES, "settle_seconds": SETTLE_S}
    with tempfile.TemporaryDirectory(prefix="caixa-bench-copy-") as tmp:
        root = Path(tmp)
        plain = FILES / copy_loop(root / "plain", durable=False)
        durable = FILES / copy_loop(root / "durable", durable=True)
        overhead = caixa_once(root / "empty", 0)[0]
        seconds, started = caixa_once(root / "caixa", FILES)
        caixa = FILES / seconds
        figures["caixa_phases"] = phases(root / "caixa", started)
        eat = shutil.which("eatmydata")
        nosync = FILES / caixa_once(root / "eatmydata", FILES, [eat])[0] if eat else None
        figures["fsyncs_per_file"] = fsyncs_per_file(root / "strace")
        figures["modelled_disk"] = modelled_disk(root)
    figures |= {
        "files_per_s": {"caixa": round(caixa, 1), "plain": round(plain, 1)}
        | {"durable": round(durable, 1), "caixa_eatmydata": nosync and round(nosync, 1)},
        "ratio_to_plain": ratio(caixa, plain),
        "ratio_to_durable": ratio(caixa, durable),
        "eatmydata_ratio_to_plain": nosync and ratio(nosync, plain),
        "empty_run_s": round(overhead, 3),
        "target_met": caixa / durable >= TARGET,
    }
    print(f"copy_throughput: {FILES} files of 1-4 KB, rule steps: [copy], settle {SETTLE_S} s")
    print(
        f"  caixa run --once: {caixa:.0f} files/s, start to exit (an empty run: {overhead:.2f} s)"
    )
    print(f"  (a) plain loop {plain:.0f} files/s: ratio caixa/plain {ratio(caixa, plain)}x")
    print(f"  (b) durable loop {durable:.0f} files/s: ratio caixa/durable {ratio(caixa, durable)}x")
    if nosync:
        print(
            f"  caixa under eatmydata (no fsync): {nosync:.0f} files/s, ratio to plain"
            f" {ratio(nosync, plain)}x; fsync costs caixa {nosync / caixa:.2f}x"
        )
    else:
        print(
            "  eatmydata not installed (apt-get install -y eatmydata): durability cost not measured"
        )
    print(f"  profile: {figures['caixa_phases']}")
    print(f"  profile: fsync+fdatasync calls per file: {figures['fsyncs_per_file']}")
    print(f"  target caixa >= {TARGET}x durable: {'MET' if figures['target_met'] else 'NOT MET'}")
    modelled = figures["modelled_disk"]
    if isinstance(modelled, dict):
        for flush, found in modelled.items():
            print(
                f"  modelled disk, a flush of {flush} ({MODELLED_FILES} files): caixa"
                f" {found['caixa']:.0f} files/s, durable loop {found['durable']:.0f}: ratio"
                f" {found['ratio_to_durable']}x"
                f" ({'MET' if (found['ratio_to_durable'] or 0) >= TARGET else 'NOT MET'})"
            )
    else:
        print("  no C compiler (cc): the modelled disk was not measured")
    save("copy_throughput", figures)


if __name__ == "__main__":
    if sys.argv[1:2] == ["durable-loop"]:  # ROOT N: the loop alone, in a process of its own
        print(copy_loop(Path(sys.argv[2]), durable=True, n=int(sys.argv[3])))
    else:
        main()
