"""The ordinary life of a job: duplicates, what happens to the source, retries, the lanes."""

from __future__ import annotations

import itertools
import json

from tests.conftest import World


def rules(steps: str, on_success: str = "archive", output: str = "{rule}/{stem}") -> str:
    return f"""
defaults:
  on_success: {on_success}
rules:
  - name: r
    inbox: in
    steps: {steps}
    output: "{output}"
"""


def test_files_dropped_while_down_are_processed_at_start(world: World) -> None:
    world.write_rules(rules("[copy]"))
    for i in range(5):
        (world.inbox() / f"n{i}.txt").write_text(f"note {i}\n")
    result = world.run_once()
    assert "5 done, 0 duplicates, 0 failed" in result.stderr
    assert sorted(p.name for p in world.outputs.rglob("n*.txt")) == [f"n{i}.txt" for i in range(5)]


def test_the_same_content_twice_is_a_duplicate_not_processed_again(world: World) -> None:
    world.write_rules(rules("[metadata, copy]"))
    inbox = world.inbox()
    (inbox / "a.txt").write_text("same words\n")
    (inbox / "b.txt").write_text("same words\n")
    (inbox / "c.txt").write_text("other words\n")
    world.run_once()
    (inbox / "a-again.txt").write_text("same words\n")  # and once more, in a later run
    result = world.run_once()
    assert "0 done, 1 duplicates" in result.stderr
    assert world.states() == {"done": 2, "duplicate": 2}
    twins = world.query("SELECT name, duplicate_of FROM jobs WHERE state = 'duplicate'")
    original = world.query("SELECT id, name FROM jobs WHERE state = 'done' AND name != 'c.txt'")[0]
    assert {r["duplicate_of"] for r in twins} == {original["id"]}
    assert len(world.manifests()) == 2  # no outputs for the duplicates
    assert sorted(p.name for p in (world.processed / "r").iterdir()) == [
        "a-again.txt",
        "a.txt",
        "b.txt",
        "c.txt",
    ]


def test_on_success_keep_leaves_the_source_and_does_not_take_it_again(world: World) -> None:
    world.write_rules(rules("[copy]", on_success="keep"))
    (world.inbox() / "keep.txt").write_text("stay\n")
    world.start()
    world.wait_for(lambda: world.finished() >= 1)
    world.wait_quiet_scan()  # a full reconciliation scan later, nothing is taken again
    assert world.states() == {"done": 1}
    assert (world.inbox() / "keep.txt").read_text() == "stay\n"
    (world.inbox() / "keep.txt").write_text("changed\n")  # a new version is new work
    world.wait_for(lambda: world.finished() >= 2)
    assert (world.outputs / "r" / "keep-2" / "keep.txt").read_text() == "changed\n"


def test_on_success_delete_removes_the_source_after_publishing(world: World) -> None:
    world.write_rules(rules("[copy]", on_success="delete"))
    (world.inbox() / "gone.txt").write_text("bye\n")
    world.run_once()
    assert (world.outputs / "r" / "gone" / "gone.txt").read_text() == "bye\n"
    assert list(world.inbox().iterdir()) == []
    assert not world.processed.exists()


def test_transient_errors_are_retried_with_backoff_then_succeed(world: World) -> None:
    counter = world.root / "counter"
    counter.mkdir()
    world.write_rules(rules(f"[{{flaky: {{busy_times: 2, counter: {counter}}}}}, copy]"))
    (world.inbox() / "busy.txt").write_text("try again\n")
    world.start()
    world.wait_for(lambda: world.finished() >= 1)
    assert world.states() == {"done": 1}
    assert (counter / "busy.txt").read_text() == "3"
    retried = [e for e in world.logs() if e["event"] == "step will be retried"]
    assert [e["attempt"] for e in retried] == [1, 2]
    assert all(e["job"] and e["rule"] == "r" and e["step"] == "flaky" for e in retried)


def test_a_failed_job_says_why_and_caixa_retry_runs_it_again(world: World) -> None:
    marker = world.root / "marker"
    counter = world.root / "counter"
    counter.mkdir()
    busy = f"{{flaky: {{busy_times: 9, counter: {counter}}}}}"
    world.write_rules(
        f"""
rules:
  - name: needy
    inbox: in
    steps: [{{flaky: {{needs: {marker}}}}}, copy]
  - name: busy
    inbox: busy
    steps: [{busy}]
"""
    )
    (world.inbox() / "a.txt").write_text("a\n")
    (world.inbox() / "b.txt").write_text("b\n")
    (world.inbox("busy") / "c.txt").write_text("c\n")
    world.start()
    world.wait_for(lambda: world.states().get("failed") == 3)
    status = json.loads(world.caixa("status", "--json", "--home", str(world.home)).stdout)
    reasons = {f["file"]: f["error"] for f in status["recent_failures"]}
    assert reasons["a.txt"]["message"] == f"{marker} is missing"
    assert reasons["c.txt"]["attempts"] == 3  # transient, retried up to max_attempts
    error = json.loads((world.failed / "needy" / "a.txt.error.json").read_text())
    assert error["step"] == "flaky" and "caixa retry" in error["retry"]

    marker.touch()
    job_a = world.query("SELECT id FROM jobs WHERE name = 'a.txt'")[0]["id"]
    retried = world.caixa("retry", job_a[:6], "--home", str(world.home))
    assert retried.returncode == 0, retried.stderr
    world.wait_for(lambda: world.states().get("done") == 1, message="a.txt retried")
    assert not (world.failed / "needy" / "a.txt").exists()
    assert not (world.failed / "needy" / "a.txt.error.json").exists()

    assert world.caixa("retry", "--failed", "--home", str(world.home)).returncode == 0
    world.wait_for(lambda: world.states().get("done") == 2, message="b.txt retried")
    assert (world.outputs / "needy" / "b" / "b.txt").read_text() == "b\n"
    world.wait_for(lambda: world.states().get("failed") == 1, message="c.txt failed again")
    assert world.caixa("retry", "nosuchjob", "--home", str(world.home)).returncode == 5


def test_accelerator_steps_never_overlap_while_cpu_steps_run_in_parallel(world: World) -> None:
    world.write_rules(
        """
rules:
  - name: gpu
    inbox: in
    steps: [metadata, {sleepy: {seconds: 0.15}}, copy]
"""
    )
    for i in range(8):
        (world.inbox() / f"img{i}.txt").write_text(f"{i}\n")
    world.run_once()
    assert world.states() == {"done": 8}
    runs = [m["steps"][1] for m in world.manifests()]
    spans = sorted((r["data"]["start"], r["data"]["end"]) for r in runs)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two accelerator steps ran at once"
    assert all(r["resource"] == "accelerator" and r["models"] == ["sleepy-model"] for r in runs)
    assert all(m["models"] == ["sleepy-model"] for m in world.manifests())


def test_a_second_daemon_on_the_same_home_is_refused(world: World) -> None:
    world.write_rules(rules("[copy]"))
    world.inbox()
    world.start()
    world.wait_log("watching")  # logged once it holds the home's lock
    second = world.caixa("run", "--once", "--rules", str(world.rules), "--home", str(world.home))
    assert second.returncode == 4
    assert "another caixa" in second.stderr
