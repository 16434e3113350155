"""The journal: one SQLite database (WAL) that is the single source of truth for jobs.

Every change of a job is committed before the call that makes it returns, so before the next
phase starts, and a crash at any instant leaves a state the daemon resumes from. The commits
that come right before an irreversible move on disk (a claim, an output folder taken, a source
leaving the work area) are synced (`synchronous=FULL`); the others need only survive the daemon,
not the power: losing them after a power cut means a step runs again, never that a file is lost
or published twice. (In WAL mode a synced commit also makes every earlier one durable.)

Changes that other threads make while one commits are committed together next (a group
commit, `_write`): one transaction and at most one sync for many jobs, each change in a
savepoint of its own, so one that fails is undone alone. Each caller still waits for its own
commit, so the order of commits and moves on disk that each job sees is the one it had alone.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from caixa.errors import HomeUnusableError
from caixa.home import Home

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    outcome TEXT,
    rule TEXT NOT NULL,
    rule_version TEXT NOT NULL,
    plan TEXT NOT NULL,
    inbox TEXT NOT NULL,
    rel TEXT NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT,
    size INTEGER,
    media_type TEXT,
    step INTEGER NOT NULL DEFAULT 0,
    running_step TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    error TEXT,
    duplicate_of TEXT,
    output_dir TEXT UNIQUE,
    final_path TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL
);
DROP INDEX IF EXISTS jobs_state;
CREATE INDEX IF NOT EXISTS jobs_content ON jobs(sha256, rule, rule_version);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at);
CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs(state, created_at);
CREATE INDEX IF NOT EXISTS jobs_rule_created ON jobs(rule, created_at);
CREATE INDEX IF NOT EXISTS jobs_state_updated ON jobs(state, updated_at);
CREATE INDEX IF NOT EXISTS jobs_state_rule ON jobs(state, rule);
CREATE TABLE IF NOT EXISTS step_runs (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    result TEXT,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS refused (
    path TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kept (
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    PRIMARY KEY (path, size, mtime_ns)
);
"""

# Jobs by state, kept by triggers so that counting them costs the same at 100 jobs and at
# 100,000 (`caixa status`, the page's overview, systemd's status line). Made, and filled from
# the jobs already there, in one transaction by whichever process opens the journal first.
COUNTS = (
    "CREATE TABLE job_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT INTO job_counts SELECT state, COUNT(*) FROM jobs GROUP BY state",
    """CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs BEGIN
        INSERT INTO job_counts VALUES (NEW.state, 1) ON CONFLICT(state) DO UPDATE SET n = n + 1;
    END""",
    """CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs BEGIN
        UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
    END""",
    """CREATE TRIGGER jobs_counted_update AFTER UPDATE OF state ON jobs
    WHEN OLD.state != NEW.state BEGIN
        UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;
        INSERT INTO job_counts VALUES (NEW.state, 1) ON CONFLICT(state) DO UPDATE SET n = n + 1;
    END""",
)


class State(StrEnum):
    claiming = "claiming"  # row written; the source is in the work area or about to be
    queued = "queued"  # waiting for its next step (`step` is the first unfinished one)
    running = "running"  # a step is running
    publishing = "publishing"  # all steps done; outputs going to `output_dir`
    settling = "settling"  # outcome decided; the source is being moved accordingly
    done = "done"
    duplicate = "duplicate"
    failed = "failed"


TERMINAL = (State.done, State.duplicate, State.failed)
UNFINISHED = tuple(s for s in State if s not in TERMINAL)

# Every state a job may go to from each state; each update is checked against it, so a phase
# that would skip one (publish a job still claiming, run a finished one) is a loud bug, not a
# quietly lost or twice-published file. A state may follow itself: a phase cut short by a crash
# runs again.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.claiming: frozenset({State.claiming, State.queued, State.settling}),
    State.queued: frozenset({State.queued, State.running, State.publishing, State.settling}),
    State.running: frozenset({State.running, State.queued, State.publishing, State.settling}),
    State.publishing: frozenset({State.publishing, State.queued, State.settling}),
    State.settling: frozenset({State.settling, *TERMINAL}),
    State.done: frozenset(),
    State.duplicate: frozenset(),
    State.failed: frozenset({State.claiming}),  # caixa retry
}


class TransitionError(RuntimeError):
    """A phase tried to move a job to a state its current one does not lead to."""


def status_line(counts: dict[str, int], gettext: Callable[[str], str] = str) -> str:
    """The queue in a line: what `systemctl status` shows, and the page (in its language:
    `gettext` translates)."""
    _ = gettext
    n = counts
    line = _("{queued} queued, {running} running, {done} done, {failed} failed").format(
        queued=n.get(State.claiming, 0) + n.get(State.queued, 0),
        running=sum(n.get(s, 0) for s in (State.running, State.publishing, State.settling)),
        done=n.get(State.done, 0),
        failed=n.get(State.failed, 0),
    )
    if n.get(State.duplicate):
        line += _(", {duplicates} duplicates").format(duplicates=n[State.duplicate])
    return line


@dataclass(frozen=True)
class Job:
    id: str
    state: State
    outcome: State | None
    rule: str
    rule_version: str
    plan: dict[str, Any]  # the rule as it was at claim time: steps, output, on_success
    inbox: Path
    rel: str
    name: str
    sha256: str | None
    size: int | None
    media_type: str | None
    step: int
    running_step: str | None
    attempts: int
    not_before: float
    error: dict[str, Any] | None
    duplicate_of: str | None
    output_dir: str | None
    final_path: str | None
    created_at: float
    updated_at: float
    finished_at: float | None

    @property
    def steps(self) -> list[dict[str, Any]]:
        return self.plan["steps"]

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        d = dict(row)
        d["state"] = State(d["state"])
        d["outcome"] = State(d["outcome"]) if d["outcome"] else None
        d["plan"] = json.loads(d["plan"])
        d["inbox"] = Path(d["inbox"])
        d["error"] = json.loads(d["error"]) if d["error"] else None
        return cls(**d)


@dataclass(frozen=True)
class Claim:
    rule: str
    rule_version: str
    plan: dict[str, Any]  # steps, output template, on_success: the rule as it is now
    inbox: Path
    rel: str


@dataclass(frozen=True)
class StepRun:
    idx: int
    name: str
    started_at: float
    finished_at: float | None
    result: dict[str, Any] | None


Change = Callable[[sqlite3.Connection], Any]  # a write: runs inside a transaction


class Holdings(Protocol):
    """The output folders jobs hold, as a reservation reads them inside its transaction."""

    def holds(self, folder: str) -> bool:
        """A job's outputs go to `folder` itself."""
        ...

    def holds_in(self, folder: str) -> bool:
        """A job's outputs go to `folder` or to a folder inside it."""
        ...


@dataclass(frozen=True)
class _HeldFolders:
    db: sqlite3.Connection

    def holds(self, folder: str) -> bool:
        return self._any("output_dir = ?", folder)

    def holds_in(self, folder: str) -> bool:
        # below `folder/` and above `folder0` ('0' follows '/'): the folders inside it, indexed
        return self._any(
            "output_dir = ? OR (output_dir > ? AND output_dir < ?)",
            folder,
            folder + "/",
            folder + "0",
        )

    def _any(self, where: str, *args: str) -> bool:
        return (
            self.db.execute(f"SELECT 1 FROM jobs WHERE {where} LIMIT 1", args).fetchone()
            is not None
        )


@dataclass
class _Write:
    """A change waiting for a commit, and once committed (`done`) what came of it."""

    change: Change
    durable: bool
    done: bool = False
    result: Any = None
    error: BaseException | None = field(default=None, repr=False)
    woken: threading.Event = field(default_factory=threading.Event, repr=False)  # done, or leads


class Journal:
    """All access to the jobs database. Thread-safe: one writer connection behind a lock,
    a reader connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # one writer connection; SQLite allows one writer anyway
        self._waiting: list[_Write] = []  # changes for the next group commit
        self._turn = threading.Lock()  # guards _waiting and _leading
        self._leading = False  # a thread is committing a group or has been handed the lead
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._synced = True
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            self._keep_counts()
        except (OSError, sqlite3.Error) as exc:
            raise HomeUnusableError(
                f"cannot open the journal {path}: {exc}; is the home folder writable by this user?"
            ) from exc

    def _keep_counts(self) -> None:
        """Make the kept counts once; a journal that has them is only read (a write
        transaction at every open would wait on the daemon's)."""
        made = "SELECT 1 FROM sqlite_master WHERE name = 'job_counts'"
        if self._db.execute(made).fetchone():
            return

        def change(db: sqlite3.Connection) -> None:
            if not db.execute(made).fetchone():  # another process may have made them meanwhile
                for statement in COUNTS:
                    db.execute(statement)

        self._write(change)

    @classmethod
    def existing(cls, home: Path) -> Journal:
        """The journal of a home that has been used; a mistyped home is not made into a new one."""
        Home(home).require_used()
        return cls(Home(home).journal)

    def close(self) -> None:
        with self._lock:
            self._db.close()
            for reader in self._readers:
                reader.close()

    def _read(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Reads go through a connection per thread: in WAL mode they never wait for a writer
        (the writer holds the lock through its sync)."""
        reader = getattr(self._local, "reader", None)
        if reader is None:
            reader = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            reader.row_factory = sqlite3.Row
            self._local.reader = reader
            with self._lock:
                self._readers.append(reader)
        return reader.execute(sql, args).fetchall()

    def _read_one(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        rows = self._read(sql, args)
        return rows[0] if rows else None

    def _write(self, change: Change, durable: bool = False) -> Any:
        """Run `change` in a write transaction, committed (and synced, if durable) before this
        returns; what it returned, or raise what it raised. One thread at a time leads: it takes
        every change waiting once it holds the writer, its own among them, and commits them
        together. The others sleep until the commit that took their change wakes them (not
        queued behind the next one), or until the lead is handed to them."""
        write = _Write(change, durable)
        with self._turn:
            self._waiting.append(write)
            leads, self._leading = not self._leading, True
        if not leads:
            write.woken.wait()  # by the commit that took it, or handed the lead
            leads = not write.done
        if leads:
            self._lead()
        if write.error is not None:
            raise copy.copy(write.error) from write.error  # each thread a traceback of its own
        return write.result

    def _lead(self) -> None:
        """Commit every change waiting, wake their threads, and hand the lead to the first change
        that came meanwhile: one wake-up a thread, and only when it has something to do."""
        group: list[_Write] = []
        try:
            with self._lock:
                with self._turn:
                    group, self._waiting = self._waiting, []
                self._commit(group)
        finally:
            for write in group:
                write.woken.set()
            with self._turn:
                if self._waiting:
                    self._waiting[0].woken.set()
                else:
                    self._leading = False

    def _commit(self, group: list[_Write]) -> None:
        """One transaction for the group, each change in a savepoint of its own."""
        durable = any(w.durable for w in group)
        try:
            if durable != self._synced:
                self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._synced = durable
            self._db.execute("BEGIN IMMEDIATE")
            for write in group:
                self._db.execute("SAVEPOINT change")
                try:
                    write.result = write.change(self._db)
                except Exception as exc:
                    self._db.execute("ROLLBACK TO change")
                    write.error = exc
                self._db.execute("RELEASE change")
            self._db.execute("COMMIT")
        except BaseException as exc:
            # A COMMIT that failed (a full disk, an I/O error, a read-only remount) may leave
            # the transaction open; the next one must start from a clean connection. Nothing
            # of the group was committed: each change fails.
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            for write in group:
                write.result, write.error = None, write.error or exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for write in group:
                write.done = True

    def _update(self, job_id: str, durable: bool = False, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        cols = ", ".join(f"{k} = ?" for k in fields)

        def change(db: sqlite3.Connection) -> None:
            if "state" in fields:
                _check_move(db, job_id, fields["state"])
            db.execute(f"UPDATE jobs SET {cols} WHERE id = ?", [*fields.values(), job_id])

        self._write(change, durable)

    # --- claiming -------------------------------------------------------------------------

    def begin_claims(self, claims: list[Claim]) -> list[str]:
        """Record files about to be claimed, in one synced commit, before they are renamed."""
        now = time.time()
        ids = [uuid.uuid4().hex[:12] for _ in claims]

        def change(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO jobs (id, state, rule, rule_version, plan, inbox, rel, name,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        job_id,
                        State.claiming,
                        c.rule,
                        c.rule_version,
                        json.dumps(c.plan),
                        str(c.inbox),
                        c.rel,
                        c.rel.rsplit("/", 1)[-1],
                        now,
                        now,
                    )
                    for job_id, c in zip(ids, claims, strict=True)
                ],
            )

        self._write(change, durable=True)
        return ids

    def forget(self, job_id: str) -> None:
        """Drop a claim that never happened (the rename failed or the file vanished)."""

        def change(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

        self._write(change)

    def admit(self, job_id: str, *, sha256: str, size: int, media_type: str) -> str | None:
        """Record the content; return the job it duplicates (same content, same rule version)."""
        now = time.time()

        def change(db: sqlite3.Connection) -> str | None:
            job = db.execute(
                "SELECT rule, rule_version FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            # an original, never another duplicate (jobs are admitted in the order their hashes
            # finish, not the order they were made in), and one that has not failed
            twin = db.execute(
                "SELECT id FROM jobs WHERE sha256 = ? AND rule = ? AND rule_version = ? AND id != ?"
                " AND duplicate_of IS NULL AND state != ? AND COALESCE(outcome, '') != ?"
                " ORDER BY created_at LIMIT 1",
                (sha256, job["rule"], job["rule_version"], job_id, State.failed, State.failed),
            ).fetchone()
            twin_id = twin["id"] if twin else None
            _check_move(db, job_id, State.settling if twin_id else State.queued)
            db.execute(
                "UPDATE jobs SET sha256 = ?, size = ?, media_type = ?, state = ?, outcome = ?,"
                " duplicate_of = ?, final_path = NULL, updated_at = ? WHERE id = ?",
                (
                    sha256,
                    size,
                    media_type,
                    State.settling if twin_id else State.queued,
                    State.duplicate if twin_id else None,
                    twin_id,
                    now,
                    job_id,
                ),
            )
            return twin_id

        return self._write(change)

    # --- steps ----------------------------------------------------------------------------

    def start_step(self, job_id: str, idx: int, name: str) -> None:
        now = time.time()

        def change(db: sqlite3.Connection) -> None:
            _check_move(db, job_id, State.running)
            db.execute(
                "UPDATE jobs SET state = ?, running_step = ?, updated_at = ? WHERE id = ?",
                (State.running, name, now, job_id),
            )
            db.execute(
                "INSERT OR REPLACE INTO step_runs (job_id, idx, name, started_at) VALUES (?,?,?,?)",
                (job_id, idx, name, now),
            )

        self._write(change)

    def unstart_step(self, job_id: str, idx: int) -> None:
        """Take back a start that no worker took up (the daemon stops): the job waits again
        for the step, to run it at the next start, and nothing says a step began."""

        def change(db: sqlite3.Connection) -> None:
            _check_move(db, job_id, State.queued)
            db.execute(
                "DELETE FROM step_runs WHERE job_id = ? AND idx = ? AND finished_at IS NULL",
                (job_id, idx),
            )
            db.execute(
                "UPDATE jobs SET state = ?, running_step = NULL, updated_at = ? WHERE id = ?",
                (State.queued, time.time(), job_id),
            )

        self._write(change)

    def finish_step(self, job_id: str, idx: int, result: dict[str, Any]) -> None:
        now = time.time()

        def change(db: sqlite3.Connection) -> None:
            _check_move(db, job_id, State.queued)
            db.execute(
                "UPDATE step_runs SET finished_at = ?, result = ? WHERE job_id = ? AND idx = ?",
                (now, json.dumps(result), job_id, idx),
            )
            db.execute(
                "UPDATE jobs SET state = ?, step = ?, running_step = NULL, attempts = 0,"
                " updated_at = ? WHERE id = ?",
                (State.queued, idx + 1, now, job_id),
            )

        self._write(change)

    def retry_later(self, job_id: str, attempts: int, error: dict[str, Any], delay: float) -> None:
        self._update(
            job_id,
            state=State.queued,
            running_step=None,
            attempts=attempts,
            not_before=time.time() + delay,
            error=json.dumps(error),
        )

    def step_runs(self, job_id: str) -> list[StepRun]:
        rows = self._read("SELECT * FROM step_runs WHERE job_id = ? ORDER BY idx", (job_id,))
        return [
            StepRun(
                r["idx"],
                r["name"],
                r["started_at"],
                r["finished_at"],
                json.loads(r["result"]) if r["result"] else None,
            )
            for r in rows
        ]

    # --- publishing and the end -----------------------------------------------------------

    def reserve_output(self, job_id: str, choose: Callable[[Holdings], str]) -> str:
        """Give the job the folder `choose` finds free of the folders other jobs hold, read in
        the same transaction so that two jobs cannot both take one; keep it across crashes."""

        def change(db: sqlite3.Connection) -> str:
            held = db.execute("SELECT output_dir FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
            if held:
                return held
            _check_move(db, job_id, State.publishing)
            folder = choose(_HeldFolders(db))
            db.execute(
                "UPDATE jobs SET output_dir = ?, state = ?, updated_at = ? WHERE id = ?",
                (folder, State.publishing, time.time(), job_id),
            )
            return folder

        return self._write(change, durable=True)

    def settle(
        self,
        job_id: str,
        outcome: State,
        error: dict[str, Any] | None = None,
        final_path: Path | None = None,
    ) -> None:
        """Decide the outcome, and where the source goes: synced, since the source moves next."""
        fields: dict[str, Any] = {"state": State.settling, "outcome": outcome, "running_step": None}
        if error is not None:
            fields["error"] = json.dumps(error)
        if final_path is not None:
            fields["final_path"] = str(final_path)
        self._update(job_id, durable=final_path is not None, **fields)

    def set_final_path(self, job_id: str, final_path: Path) -> None:
        """Where the source goes, recorded before it moves so a resumed job moves it there."""
        self._update(job_id, durable=True, final_path=str(final_path))

    def finish(self, job_id: str, outcome: State) -> None:
        self._update(job_id, state=outcome, finished_at=time.time())

    def requeue(self, job_id: str) -> None:
        """Run a failed job again from its first step (`caixa retry`). Its source is still in
        failed/ (final_path) until the caller moves it back into the work area; a crash in
        between is finished by the daemon's recovery."""

        def change(db: sqlite3.Connection) -> None:
            _check_move(db, job_id, State.claiming)
            db.execute("DELETE FROM step_runs WHERE job_id = ?", (job_id,))
            db.execute(
                "UPDATE jobs SET state = ?, outcome = NULL, step = 0, attempts = 0, not_before = 0,"
                " error = NULL, output_dir = NULL, finished_at = NULL, updated_at = ? WHERE id = ?",
                (State.claiming, time.time(), job_id),
            )

        self._write(change, durable=True)

    # --- reading --------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        row = self._read_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise KeyError(job_id)
        return Job.from_row(row)

    def find(self, prefix: str) -> list[Job]:
        rows = self._read("SELECT * FROM jobs WHERE id LIKE ? ORDER BY created_at", (prefix + "%",))
        return [Job.from_row(r) for r in rows]

    def jobs(self, *states: State, limit: int = -1, newest_first: bool = False) -> list[Job]:
        marks = ",".join("?" * len(states))
        order = "DESC" if newest_first else "ASC"
        rows = self._read(
            f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY updated_at {order} LIMIT ?",
            (*states, limit),
        )
        return [Job.from_row(r) for r in rows]

    def ready(self, now: float) -> list[str]:
        """Unfinished jobs whose retry delay, if any, has passed."""
        marks = ",".join("?" * len(UNFINISHED))
        rows = self._read(
            f"SELECT id FROM jobs WHERE state IN ({marks}) AND not_before <= ? ORDER BY created_at",
            (*UNFINISHED, now),
        )
        return [r["id"] for r in rows]

    def page(
        self,
        where: list[tuple[str, tuple[Any, ...]]],
        order: str,
        limit: int,
        offset: int,
        total: int | None = None,
    ) -> tuple[list[Job], int]:
        """One page of the jobs that every `where` clause (SQL with its arguments, written by
        the caller from fixed text) holds for, in `order`, and how many hold in all (counted
        unless `total` is given). The indexes keep it quick at 100,000 jobs (bench/web.py)."""
        clause = " AND ".join(f"({sql})" for sql, _ in where) or "1"
        args = tuple(a for _, values in where for a in values)
        if total is None:
            counted = self._read_one(f"SELECT COUNT(*) FROM jobs WHERE {clause}", args)
            total = counted[0] if counted else 0
        rows = self._read(
            f"SELECT * FROM jobs WHERE {clause} ORDER BY {order} LIMIT ? OFFSET ?",
            (*args, limit, offset),
        )
        return [Job.from_row(r) for r in rows], total

    def counts_by_rule(self, state: State) -> dict[str, int]:
        rows = self._read(
            "SELECT rule, COUNT(*) FROM jobs WHERE state = ? GROUP BY rule ORDER BY rule", (state,)
        )
        return {r[0]: r[1] for r in rows}

    def counts(self) -> dict[str, int]:
        rows = self._read("SELECT state, n FROM job_counts WHERE n > 0")
        return {r[0]: r[1] for r in rows}

    # --- what the watcher remembers -------------------------------------------------------

    def refuse(self, path: Path, reason: str) -> bool:
        """Record a refused path; true the first time, so it is logged once."""

        def change(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "INSERT OR IGNORE INTO refused (path, reason, seen_at) VALUES (?, ?, ?)",
                (printable(path), reason, time.time()),
            )
            return cur.rowcount > 0

        return self._write(change)

    def refusals(self, limit: int = 20) -> list[tuple[str, str, float]]:
        rows = self._read(
            "SELECT path, reason, seen_at FROM refused ORDER BY seen_at DESC LIMIT ?", (limit,)
        )
        return [tuple(r) for r in rows]

    def keep(self, path: Path, size: int, mtime_ns: int) -> None:
        """Remember a source left in its inbox (`on_success: keep`) so it is not taken again."""

        def change(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR IGNORE INTO kept VALUES (?, ?, ?)", (str(path), size, mtime_ns))

        self._write(change, durable=True)

    def is_kept(self, path: Path, size: int, mtime_ns: int) -> bool:
        row = self._read_one(
            "SELECT 1 FROM kept WHERE path = ? AND size = ? AND mtime_ns = ?",
            (str(path), size, mtime_ns),
        )
        return row is not None


def _check_move(db: sqlite3.Connection, job_id: str, to: State) -> None:
    """Refuse a state change TRANSITIONS does not allow (inside the changing transaction)."""
    row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise KeyError(job_id)
    now = State(row[0])
    if to not in TRANSITIONS[now]:
        raise TransitionError(f"job {job_id} cannot go from {now} to {to}")


def printable(path: Path) -> str:
    """A path as text SQLite can hold: bytes of a name that are not UTF-8 shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
