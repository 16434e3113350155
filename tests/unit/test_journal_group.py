"""The journal's group commit: changes that wait for the writer together are committed in one
transaction, and one that fails is undone alone."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from caixa.daemon.journal import Claim, Journal, State, TransitionError
from tests.conftest import wait_until

PLAN = {"steps": [{"name": "copy", "params": {}}], "output": "{stem}", "on_success": "archive"}


def _claimed(journal: Journal, tmp_path: Path, n: int) -> list[str]:
    claims = [Claim("r", "v1", PLAN, tmp_path / "in", f"{i}.txt") for i in range(n)]
    return journal.begin_claims(claims)


def test_changes_waiting_together_share_one_commit_and_a_bad_one_fails_alone(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    *good, bad = _claimed(journal, tmp_path, 9)
    outcomes: dict[str, Any] = {}

    def admit(job_id: str) -> None:
        outcomes[job_id] = journal.admit(
            job_id, sha256=job_id.ljust(64, "0"), size=1, media_type="text/plain"
        )

    def publish_unadmitted() -> None:
        try:
            journal.reserve_output(bad, lambda _: "out")
        except TransitionError as exc:
            outcomes[bad] = exc

    statements: list[str] = []
    threads = [threading.Thread(target=admit, args=(job_id,)) for job_id in good]
    threads.append(threading.Thread(target=publish_unadmitted))
    with journal._lock:  # a commit under way: every change arriving now waits for the next
        for thread in threads:
            thread.start()
        wait_until(lambda: len(journal._waiting) == 9, message="nine changes waiting")
        journal._db.set_trace_callback(statements.append)
    for thread in threads:
        thread.join()
    journal._db.set_trace_callback(None)

    assert statements.count("COMMIT") == 1
    assert all(outcomes[job_id] is None for job_id in good)  # admitted, no duplicate
    assert all(journal.get(job_id).state is State.queued for job_id in good)
    assert "cannot go from claiming to publishing" in str(outcomes[bad])
    refused = journal.get(bad)
    assert (refused.state, refused.output_dir) == (State.claiming, None)  # nothing of it kept


def test_jobs_going_their_way_on_many_threads_all_end_done_and_counted(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    ids = _claimed(journal, tmp_path, 40)

    def whole_way(n: int, job_id: str) -> None:
        journal.admit(job_id, sha256=f"{n:064x}", size=1, media_type="text/plain")
        journal.start_step(job_id, 0, "copy")
        journal.finish_step(job_id, 0, {"artifacts": []})
        journal.reserve_output(job_id, lambda _: f"out-{n}")
        journal.settle(job_id, State.done, final_path=tmp_path / "processed" / f"{n}.txt")
        journal.finish(job_id, State.done)

    threads = [threading.Thread(target=whole_way, args=item) for item in enumerate(ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert {journal.get(job_id).state for job_id in ids} == {State.done}
    assert sorted(journal.get(job_id).output_dir or "" for job_id in ids) == sorted(
        f"out-{n}" for n in range(40)
    )
    assert journal.counts() == {State.done: 40}
