"""The journal refuses state changes its table of transitions does not allow."""

from __future__ import annotations

from pathlib import Path

import pytest

from caixa.daemon.journal import Claim, Journal, State, TransitionError


def _journal_with_a_job(tmp_path: Path) -> tuple[Journal, str]:
    journal = Journal(tmp_path / "journal.sqlite3")
    plan = {"steps": [{"name": "copy", "params": {}}], "output": "{stem}", "on_success": "archive"}
    (job_id,) = journal.begin_claims([Claim("r", "v1", plan, tmp_path / "in", "a.txt")])
    return journal, job_id


def test_a_job_goes_its_way_and_a_finished_one_never_runs_again(tmp_path: Path) -> None:
    journal, job_id = _journal_with_a_job(tmp_path)
    assert journal.admit(job_id, sha256="0" * 64, size=1, media_type="text/plain") is None
    journal.start_step(job_id, 0, "copy")
    journal.finish_step(job_id, 0, {"artifacts": []})
    journal.reserve_output(job_id, lambda _: "a")
    journal.settle(job_id, State.done, final_path=tmp_path / "processed" / "a.txt")
    journal.finish(job_id, State.done)
    assert journal.get(job_id).state is State.done
    with pytest.raises(TransitionError, match="cannot go from done to running"):
        journal.start_step(job_id, 0, "copy")
    with pytest.raises(TransitionError, match="from done to claiming"):
        journal.requeue(job_id)


def test_a_claim_cannot_skip_to_publishing_and_a_failed_job_may_be_retried(
    tmp_path: Path,
) -> None:
    journal, job_id = _journal_with_a_job(tmp_path)
    with pytest.raises(TransitionError, match="from claiming to publishing"):
        journal.reserve_output(job_id, lambda _: "a")
    assert journal.get(job_id).output_dir is None  # the refused change left nothing behind
    journal.settle(job_id, State.failed, {"message": "bad"}, final_path=tmp_path / "f" / "a.txt")
    journal.finish(job_id, State.failed)
    journal.requeue(job_id)
    assert journal.get(job_id).state is State.claiming
