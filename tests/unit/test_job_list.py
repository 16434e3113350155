"""The jobs a person pages through (`caixa.app.jobs`, `job`): filters, sorts, pages and counts
on a real journal; counts kept by triggers agree with the jobs, also for a journal made before
the counts were kept."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from caixa import app
from caixa.daemon.journal import Claim, Journal, State
from caixa.errors import JobNotFoundError
from caixa.home import Home


def claim(rule: str, name: str) -> Claim:
    plan = {"steps": [{"name": "copy", "params": {}}], "output": "{rule}/{stem}"}
    return Claim(rule, "v1", plan, Path("/in"), name)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    journal = Journal(Home(tmp_path).journal)
    ids = journal.begin_claims(
        [claim("scans", f"scan-{n}.pdf") for n in range(7)]
        + [claim("notes", f"Note-{n}.txt") for n in range(5)]
    )
    for n, job_id in enumerate(ids):
        journal.admit(job_id, sha256=f"{n:064x}", size=n, media_type="text/plain")
        if n % 4 == 0:
            journal.settle(job_id, State.failed, {"step": "copy", "message": "broken"})
            journal.finish(job_id, State.failed)
        elif n % 4 == 1:
            journal.settle(job_id, State.done)
            journal.finish(job_id, State.done)
    journal.close()
    return tmp_path


def counted(home: Path) -> dict[str, int]:
    db = sqlite3.connect(Home(home).journal)
    try:
        return dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    finally:
        db.close()


def test_filters_sorts_and_pages(home: Path) -> None:
    everything = app.jobs(home, per_page=5)
    assert (everything.total, everything.pages, len(everything.jobs)) == (12, 3, 5)
    assert len(app.jobs(home, page=3, per_page=5).jobs) == 2
    failed = app.jobs(home, state="failed")
    assert failed.total == 3 and {j.state for j in failed.jobs} == {State.failed}
    notes = app.jobs(home, rule="notes", name="note", sort="name")
    assert [j.name for j in notes.jobs] == [f"Note-{n}.txt" for n in range(5)]
    assert app.jobs(home, rule="notes", state="failed").total == 1
    newest = app.jobs(home).jobs
    assert [j.created_at for j in newest] == sorted((j.created_at for j in newest), reverse=True)
    now = time.time()
    assert app.jobs(home, since=now - 3600, until=now + 1).total == 12
    assert app.jobs(home, since=now + 3600).total == 0
    with pytest.raises(ValueError):
        app.jobs(home, sort="DROP TABLE jobs")


def test_a_job_with_its_steps_and_manifest(home: Path, tmp_path: Path) -> None:
    job = app.jobs(home, state="queued").jobs[0]
    journal = Journal(Home(home).journal)
    journal.start_step(job.id, 0, "copy")
    journal.finish_step(job.id, 0, {"artifacts": [], "device": "cpu", "seconds": 0.1})
    journal.reserve_output(job.id, lambda _: "scans/x")
    journal.close()
    outputs = tmp_path / "outputs"
    (outputs / "scans" / "x").mkdir(parents=True)
    (outputs / "scans" / "x" / "manifest.json").write_text(json.dumps({"outputs": ["x.txt"]}))
    detail = app.job(home, job.id, outputs)
    assert [s.name for s in detail.steps] == ["copy"] and detail.steps[0].result["device"] == "cpu"
    assert detail.manifest == {"outputs": ["x.txt"]}
    with pytest.raises(JobNotFoundError):
        app.job(home, "nope")


def test_the_kept_counts_agree_with_the_jobs(home: Path) -> None:
    journal = Journal(Home(home).journal)
    assert journal.counts() == counted(home)
    job = app.jobs(home, state="failed").jobs[0]
    journal.requeue(job.id)
    journal.forget(app.jobs(home, state="done").jobs[0].id)
    assert journal.counts() == counted(home)
    journal.close()


def test_a_journal_from_before_the_counts_gets_them(home: Path) -> None:
    db = sqlite3.connect(Home(home).journal)
    for name in ("jobs_counted_insert", "jobs_counted_delete", "jobs_counted_update"):
        db.execute(f"DROP TRIGGER {name}")
    db.execute("DROP TABLE job_counts")
    db.commit()
    db.close()
    journal = Journal(Home(home).journal)
    assert journal.counts() == counted(home) and sum(journal.counts().values()) == 12
    journal.close()
