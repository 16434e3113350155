"""The bound that a copy rule's durable work puts on caixa's files/s, whatever its daemon does.

Per file, caixa's copy job makes: a claim (its journal row synced, the file renamed into a
folder of its own in the work area, both folders synced), a check (type sniffed, SHA-256), the
step (a copy in a step folder), a publish (an output folder made, the copy synced and moved in,
the folder synced, the manifest written and synced, the folder synced again, the journal
synced) and a settle (the source moved to processed/, both folders synced, the work folder
removed). This bench makes that same work with caixa's own helpers on one thread, with no
scheduler, worker process, logging or per-phase journal reads, three ways:

- one file at a time (the work of one job; caixa's daemon overlaps jobs on its threads);
- batches of files, each phase for the whole batch: one journal transaction a phase, and the
  folders the batch shares synced once;
- those batches with every sync replaced by one syncfs() of the filesystem at each of the four
  points where the order of durable moves needs one (a barrier: it flushes every program's
  writes on that filesystem, not only caixa's).

Against the durable loop of copy_throughput.py, in the same run. Issue 15's target for a copy
rule is >= 0.5x that loop.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

from _common import ratio, save
from copy_throughput import copy_loop, make_files

from caixa import filetypes
from caixa.daemon.fsutil import atomic_write_bytes, claim_move, fsync_dirs, fsync_file
from caixa.daemon.journal import Claim, Journal
from caixa.nofollow import open_regular

FILES = 2000
BATCHES = (1, 8, 64)
PLAN = {"steps": [{"name": "copy", "params": {}}], "output": "{rule}/{stem}"}


class Syncs:
    """Durability as caixa has it: each file and folder synced itself."""

    def file(self, path: Path) -> None:
        fsync_file(path)

    def dirs(self, folders: Collection[Path]) -> None:
        fsync_dirs(folders)


class Barriers(Syncs):
    """One syncfs() of the whole filesystem where caixa syncs a batch's folders."""

    def __init__(self, root: Path) -> None:
        self.fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        self.libc = ctypes.CDLL(None, use_errno=True)

    def file(self, path: Path) -> None:
        """Its data goes with the next barrier."""

    def dirs(self, folders: Collection[Path]) -> None:
        if self.libc.syncfs(self.fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs")


class Jobs:
    """A batch of jobs through the journal: one transaction a phase (synced where caixa's is)."""

    def __init__(self, path: Path) -> None:
        self.journal = Journal(path)  # caixa's schema, indexes and triggers
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.durable: bool | None = None

    def claim(self, inbox: Path, names: list[str]) -> list[str]:
        return self.journal.begin_claims([Claim("c", "v1", PLAN, inbox, n) for n in names])

    def write(self, sql: str, rows: list[tuple[object, ...]], durable: bool = False) -> None:
        if durable != self.durable:  # switched only when it changes, as caixa's journal does
            self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self.durable = durable
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(sql, rows)
        self.db.execute("COMMIT")


def run(root: Path, batch: int, syncs: Syncs | None = None) -> float:
    """files/s of the copy job's durable work on FILES files, `batch` at a time."""
    inbox, work = root / "inbox", root / "work"
    out, done = root / "outputs" / "c", root / "processed" / "c"
    make_files(inbox, FILES)
    for folder in (work, out, done):
        folder.mkdir(parents=True)
    syncs = syncs or Syncs()
    jobs = Jobs(root / "journal.db")
    os.sync()
    start = time.perf_counter()
    names = sorted(e.name for e in os.scandir(inbox))
    for first in range(0, FILES, batch):
        group = names[first : first + batch]
        ids = jobs.claim(inbox, group)
        sources = [work / i / "source" / n for i, n in zip(ids, group, strict=True)]
        for name, source in zip(group, sources, strict=True):
            source.parent.mkdir(parents=True)
            claim_move(inbox / name, source, inbox, sync=False)
        syncs.dirs({s.parent for s in sources} | {work, inbox})
        checked = []
        for job, source in zip(ids, sources, strict=True):
            with open_regular(source) as f:
                size = os.fstat(f.fileno()).st_size
                media_type = filetypes.of_bytes(f.read(filetypes.SNIFF_BYTES))
                f.seek(0)
                sha = hashlib.file_digest(f, "sha256").hexdigest()
            checked.append((sha, size, media_type, job))
        jobs.write(
            "UPDATE jobs SET state = 'queued', sha256 = ?, size = ?, media_type = ? WHERE id = ?",
            checked,
        )
        copies = []
        for job, source in zip(ids, sources, strict=True):
            step = work / job / "0"
            step.mkdir()
            copies.append(Path(shutil.copy2(source, step / source.name)))
        now = time.time()
        jobs.write(
            "INSERT INTO step_runs VALUES (?, 0, 'copy', ?, ?, '{}')", [(i, now, now) for i in ids]
        )
        jobs.write(
            "UPDATE jobs SET state = 'publishing', step = 1 WHERE id = ?", [(i,) for i in ids]
        )
        folders = [out / c.stem for c in copies]
        jobs.write(
            "UPDATE jobs SET output_dir = ? WHERE id = ?",
            [(f"c/{f.name}", i) for f, i in zip(folders, ids, strict=True)],
            durable=True,
        )
        for folder in folders:
            folder.mkdir()
        syncs.dirs({out})
        for copy, folder in zip(copies, folders, strict=True):
            syncs.file(copy)
            copy.rename(folder / copy.name)
        syncs.dirs(folders)  # every output in place before its manifest says so
        for job, copy, folder in zip(ids, copies, folders, strict=True):
            manifest = json.dumps({"job": job, "outputs": [copy.name]}, indent=2).encode()
            atomic_write_bytes(folder / "manifest.json", manifest, sync=False)
            syncs.file(folder / "manifest.json")
        syncs.dirs(folders)
        jobs.write(
            "UPDATE jobs SET state = 'settling', outcome = 'done', final_path = ? WHERE id = ?",
            [(str(done / s.name), i) for s, i in zip(sources, ids, strict=True)],
            durable=True,
        )
        for source in sources:
            source.rename(done / source.name)
        syncs.dirs({done} | {s.parent for s in sources})
        jobs.write("UPDATE jobs SET state = 'done' WHERE id = ?", [(i,) for i in ids])
        for job in ids:
            for inner in ("source", "0", ""):
                (work / job / inner).rmdir()
    return FILES / (time.perf_counter() - start)


def main() -> None:
    found: dict[str, dict[str, float | None]] = {}
    with tempfile.TemporaryDirectory(prefix="caixa-bench-bound-") as tmp:
        root = Path(tmp)
        durable = FILES / copy_loop(root / "loop", durable=True, n=FILES)
        print(f"copy_bound: {FILES} files of 1-4 KB; the durable loop {durable:.0f} files/s")
        for batch in BATCHES:
            for barriers in (False, True) if batch > 1 else (False,):
                folder = root / f"b{batch}{'-syncfs' if barriers else ''}"
                folder.mkdir()
                fps = run(folder, batch, Barriers(folder) if barriers else None)
                how = f"{batch} at a time" + (", syncfs barriers" if barriers else "")
                found[how] = {"files_per_s": round(fps, 1), "ratio_to_durable": ratio(fps, durable)}
                print(
                    f"  {how}: {fps:.0f} files/s, ratio to the durable loop {ratio(fps, durable)}x"
                )
    save("copy_bound", {"files": FILES, "durable_loop_files_per_s": round(durable, 1), **found})


if __name__ == "__main__":
    main()
