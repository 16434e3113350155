"""A duplicate names the job that did the work, whatever order the twins' hashes finish in."""

from __future__ import annotations

from pathlib import Path

from caixa.daemon.journal import Claim, Journal, State

SAME = "5" * 64
PLAN = {"steps": [{"name": "copy", "params": {}}], "output": "{stem}", "on_success": "archive"}


def _claims(journal: Journal, inbox: Path, *names: str) -> list[str]:
    return journal.begin_claims([Claim("r", "v1", PLAN, inbox, name) for name in names])


def _admit(journal: Journal, job_id: str) -> str | None:
    return journal.admit(job_id, sha256=SAME, size=5, media_type="text/plain")


def test_a_later_twin_names_the_original_not_the_first_made_duplicate(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    first_made, second_made = _claims(journal, tmp_path / "in", "a.txt", "b.txt")
    assert _admit(journal, second_made) is None  # its hash finished first: it does the work
    assert _admit(journal, first_made) == second_made
    (later,) = _claims(journal, tmp_path / "in", "a-again.txt")
    assert _admit(journal, later) == second_made


def test_a_copy_of_a_file_whose_job_failed_is_worked_again(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    original, twin = _claims(journal, tmp_path / "in", "a.txt", "b.txt")
    assert _admit(journal, original) is None
    assert _admit(journal, twin) == original
    journal.settle(original, State.failed, {"message": "bad"}, final_path=tmp_path / "f" / "a")
    journal.finish(original, State.failed)
    (later,) = _claims(journal, tmp_path / "in", "a-again.txt")
    assert _admit(journal, later) is None
