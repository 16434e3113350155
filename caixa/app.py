"""The operations a person asks for, on one home: status, jobs, job, retry, search, ask,
forget, check, explain, doctor. The CLI prints what they return; the web page shows it. Each is
safe while a daemon runs on the home: they read the journal and the index, and a retry is the
journal's own two-step protocol (jobs.requeue), which the daemon finishes if it is cut short."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from caixa import doctor as diagnosis
from caixa.config import rules as rules_file
from caixa.config.rules import Rule, RuleSet
from caixa.daemon import jobs as job_phases
from caixa.daemon import lanestate, space
from caixa.daemon.intake import TEMP_PATTERNS, is_temp_name
from caixa.daemon.journal import Job, Journal, State, StepRun
from caixa.daemon.outputs import MANIFEST
from caixa.daemon.workarea import WorkArea
from caixa.errors import JobNotFoundError
from caixa.home import Home
from caixa.pipelines.index import retrieve
from caixa.pipelines.index.store import Document
from caixa.pipelines.llm import ask as answering
from caixa.pipelines.llm.chat import ChatModel

# --- status --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    counts: dict[str, int]
    running: list[Job]
    recent_failures: list[Job]
    refused: list[tuple[str, str, float]]  # path, reason, when
    lanes: dict[str, Any] | None  # the running daemon's lanes; None when none runs
    paused: str | None = None  # why the running daemon waits (a full disk...), or None


def paused(lanes: dict[str, Any] | None) -> str | None:
    """Why the running daemon waits, looked at now: its lanes file cannot be rewritten while
    its disk is full or read-only, so the filesystems it writes to are looked at here too."""
    if not lanes or "room" not in lanes:
        return None
    short = space.look([Path(p) for p in lanes["room"]["paths"]], lanes["room"]["min_free"])
    return "paused: " + "; ".join(short) if short else lanes.get("paused")


def status(home: Path, failures: int = 10) -> Status:
    journal = Journal.existing(home)
    try:
        return Status(
            counts=journal.counts(),
            running=journal.jobs(State.running),
            recent_failures=journal.jobs(State.failed, limit=failures, newest_first=True),
            refused=journal.refusals(failures),
            lanes=(lanes := lanestate.read(home)),
            paused=paused(lanes),
        )
    finally:
        journal.close()


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "state": job.state,
        "rule": job.rule,
        "file": job.name,
        "step": job.running_step,
        "error": job.error,
        "path": job.final_path,
        "updated_at": job.updated_at,
    }


# --- the jobs, a page at a time ------------------------------------------------------------

# How a list of jobs may be sorted; the key is what a page asks for.
SORTS = {
    "newest": "created_at DESC",
    "oldest": "created_at ASC",
    "updated": "updated_at DESC",
    "name": "name COLLATE NOCASE ASC, created_at DESC",
    "rule": "rule ASC, created_at DESC",
    "state": "state ASC, created_at DESC",
}


@dataclass(frozen=True)
class JobList:
    jobs: list[Job]
    total: int  # jobs that match, on every page
    page: int  # from 1
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def jobs(
    home: Path,
    state: str | None = None,
    rule: str | None = None,
    name: str | None = None,
    since: float | None = None,
    until: float | None = None,
    sort: str = "newest",
    page: int = 1,
    per_page: int = 50,
) -> JobList:
    """The jobs that match, one page of them: by state, rule, a part of the file name, and
    the time they were taken (`since` <= created_at < `until`)."""
    where: list[tuple[str, tuple[Any, ...]]] = []
    if state:
        where.append(("state = ?", (State(state),)))
    if rule:
        where.append(("rule = ?", (rule,)))
    if name:
        where.append(("instr(lower(name), ?) > 0", (name.lower(),)))
    if since is not None:
        where.append(("created_at >= ?", (since,)))
    if until is not None:
        where.append(("created_at < ?", (until,)))
    if sort not in SORTS:
        raise ValueError(f"unknown sort {sort!r} (known: {', '.join(SORTS)})")
    page = max(1, page)
    journal = Journal.existing(home)
    try:
        total = None
        if not (rule or name or since is not None or until is not None):  # kept by the journal
            counts = journal.counts()
            total = counts.get(state, 0) if state else sum(counts.values())
        found, total = journal.page(where, SORTS[sort], per_page, (page - 1) * per_page, total)
    finally:
        journal.close()
    return JobList(found, total, page, per_page)


def failed_by_rule(home: Path) -> dict[str, int]:
    """How many jobs failed for good, by rule: what `retry(rule=...)` would queue."""
    journal = Journal.existing(home)
    try:
        return journal.counts_by_rule(State.failed)
    finally:
        journal.close()


@dataclass(frozen=True)
class JobDetail:
    job: Job
    steps: list[StepRun]
    manifest: dict[str, Any] | None  # None until published, or when its folder is gone
    folder: Path | None  # its output folder, when published and `outputs` was given


def job(home: Path, job_id: str, outputs: Path | None = None) -> JobDetail:
    """One job: its steps as they ran (timings, device, models, notes) and its manifest."""
    journal = Journal.existing(home)
    try:
        try:
            found = journal.get(job_id)
        except KeyError:
            raise JobNotFoundError(f"no job has the id {job_id!r}") from None
        steps = journal.step_runs(job_id)
    finally:
        journal.close()
    folder = outputs / found.output_dir if outputs and found.output_dir else None
    manifest = None
    if folder is not None:
        with contextlib.suppress(OSError, ValueError):
            manifest = json.loads((folder / MANIFEST).read_text())
    return JobDetail(found, steps, manifest, folder)


# --- retry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retried:
    job: Job
    queued: bool
    why: str | None = None  # why it was not, when it was not


def retry(home: Path, ref: str | None = None, rule: str | None = None) -> list[Retried]:
    """Queue failed jobs again from their first step: the one `ref` names (an id or a prefix),
    or every failed job (of `rule`, when given). The daemon takes them at its next look."""
    journal = Journal.existing(home)
    try:
        if ref is not None:
            chosen = [j for j in journal.find(ref) if j.state is State.failed]
            if not chosen:
                raise JobNotFoundError(f"no failed job has an id starting with {ref!r}")
        else:
            chosen = [j for j in journal.jobs(State.failed) if rule is None or j.rule == rule]
        work = WorkArea(Home(home).work)
        done = []
        for job in chosen:
            why = job_phases.requeue(journal, work, job)
            done.append(Retried(job, why is None, why))
        return done
    finally:
        journal.close()


# --- search and ask ------------------------------------------------------------------------


def search(
    home: Path, query: str, limit: int = 10, outputs: Path | None = None
) -> retrieve.Results:
    """Hits for a query, best first, each with its output folder under `outputs` (relative to
    it when None)."""
    found = retrieve.search(home, query, limit)
    return replace(found, hits=_placed(home, found.hits, outputs))


def ask(
    home: Path,
    question: str,
    load: Callable[[], ChatModel],
    outputs: Path | None = None,
    **options: Any,
) -> answering.Answer:
    """`caixa ask`: the answer from the best passages of the index, citing files and pages."""

    def find(text: str, limit: int) -> list[retrieve.Hit]:
        return search(home, text, limit, outputs).hits

    return answering.answer(find, question, load, **options)


def _placed(home: Path, hits: Sequence[retrieve.Hit], outputs: Path | None) -> list[retrieve.Hit]:
    """Hits with their folders under `outputs`; an index made before it recorded folders
    gets them from the journal."""
    missing = [h.document.job_id for h in hits if h.folder is None]
    known = _jobs(home, missing) if missing and Home(home).journal.exists() else {}
    placed = []
    for hit in hits:
        folder = hit.folder
        if folder is None and (job := known.get(hit.document.job_id)) and job.output_dir:
            folder = Path(job.output_dir)
        if folder is not None and outputs is not None:
            folder = outputs / folder
        placed.append(replace(hit, folder=folder))
    return placed


def forget(home: Path, ref: str | None, outputs: Path | None) -> list[Document]:
    """Drop from the index the documents of a file name or a job (`ref`), and with `outputs`
    those whose output folder is gone or whose job failed or was forgotten."""
    gone = retrieve.drop(home, ref) if ref is not None else []
    if ref is not None and not gone:
        raise JobNotFoundError(f"no indexed file is named {ref!r} and no indexed job id starts so")
    if outputs is not None:
        docs = retrieve.documents(home)
        jobs = _jobs(home, [d.job_id for d in docs])
        orphans = [d for d in docs if _orphan(jobs.get(d.job_id), outputs)]
        retrieve.forget(home, [d.job_id for d in orphans])
        gone += orphans
    return gone


def _orphan(job: Job | None, outputs: Path) -> bool:
    """Failed, forgotten, or published into a folder that is gone; jobs still on their way
    to their outputs are not orphans."""
    if job is None or job.state is State.failed:
        return True
    if job.state is not State.done:
        return False
    return job.output_dir is None or not (outputs / job.output_dir).is_dir()


def _jobs(home: Path, job_ids: Sequence[str]) -> dict[str, Job]:
    """The jobs the journal still has, by id."""
    journal = Journal.existing(home)
    try:
        found = {}
        for job_id in set(job_ids):
            with contextlib.suppress(KeyError):
                found[job_id] = journal.get(job_id)
        return found
    finally:
        journal.close()


# --- the rules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleCheck:
    rule: Rule
    missing: list[str]  # steps not installed


@dataclass(frozen=True)
class Check:
    rules: RuleSet
    verdicts: list[RuleCheck]
    reasons: dict[str, str]  # why each missing step is missing

    @property
    def inactive(self) -> int:
        return sum(bool(v.missing) for v in self.verdicts)


def check(rules_path: Path) -> Check:
    """`caixa check`: the rules (refused with file:line when invalid) and the steps each
    rule waits for, with why."""
    ruleset = rules_file.load(rules_path)
    reasons: dict[str, str] = {}
    verdicts = []
    for rule in ruleset.rules:
        reasons.update(u.split(": ", 1) for u in rule.unavailable)
        verdicts.append(RuleCheck(rule, [u.split(":", 1)[0] for u in rule.unavailable]))
    return Check(ruleset, verdicts, reasons)


@dataclass(frozen=True)
class Explanation:
    file: Path
    ignored: bool  # a hidden or temporary name: caixa never looks at it
    rule: Rule | None
    reasons: list[str]  # why each rule before it does not take the file
    outputs: Path | None


def explain(file: Path, rules_path: Path) -> Explanation:
    """Which rule and steps a file would get, and why the rules before it would not."""
    ruleset = rules_file.load(rules_path)
    if is_temp_name(file.name):
        return Explanation(
            file, True, None, [f"hidden and temporary names ({', '.join(TEMP_PATTERNS)})"], None
        )
    if file.is_symlink():
        raise JobNotFoundError(
            f"{file}: a symlink; caixa takes only regular files, so no rule would"
        )
    if not file.is_file():
        raise JobNotFoundError(f"{file}: no such file (explain reads its content to tell its type)")
    verdict = ruleset.decide(file.absolute())
    rule = verdict.rule
    return Explanation(
        file,
        False,
        rule,
        list(verdict.reasons),
        ruleset.outputs / rule.output if rule is not None else None,
    )


# --- this machine --------------------------------------------------------------------------


def doctor(rules_path: Path, home: Path) -> diagnosis.Report:
    """`caixa doctor` and the web page's System view: what caixa will run, and where, on this
    machine and these rules; `Report.to_json()` has the keys caixa.doctor documents."""
    return diagnosis.diagnose(rules_path, home)
