"""What a user sees from `caixa check`, `explain`, `schema` and `run` on good and bad rules."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import CAIXA, World

REPO = Path(__file__).resolve().parents[2]

BAD_KEY = """\
rules:
  - name: notes
    inbox: in
    mach:
      glob: "*.txt"
    steps: [text]
"""


def test_an_invalid_rules_file_is_refused_by_check_and_run_with_file_line_and_key(
    world: World,
) -> None:
    rules = world.write_rules(BAD_KEY)
    checked = world.caixa("check", "--rules", str(rules))
    assert checked.returncode == 3
    assert f"{rules}:4: rules[0].mach: unknown key 'mach'" in checked.stderr
    assert "allowed: name, inbox, match, steps, output, on_success" in checked.stderr
    ran = world.caixa("run", "--once", "--rules", str(rules), "--home", str(world.home))
    assert ran.returncode == 3
    assert f"{rules}:4: rules[0].mach: unknown key 'mach'" in ran.stderr
    assert not (world.home / "journal.sqlite3").exists()


def test_check_accepts_the_repo_example_with_every_step_installed(world: World) -> None:
    checked = world.caixa("check", "--strict", "--rules", str(REPO / "rules.yaml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    rules = [line.split() for line in checked.stdout.splitlines()[1:] if line.strip()]
    assert len(rules) >= 6 and all(r[-1] == "ready" for r in rules), checked.stdout
    assert {"scans", "speak", "photos", "prompts", "notes"} <= {r[0] for r in rules}


def test_explain_says_which_rule_takes_a_file_and_why_others_do_not(world: World) -> None:
    world.write_rules(
        """
rules:
  - name: pdfs
    inbox: in
    match: {type: [application/pdf]}
    steps: [copy]
  - name: texts
    inbox: in
    match: {glob: "*.TXT"}
    steps: [text, metadata]
"""
    )
    note = world.inbox() / "Note.txt"
    note.write_text("hello\n")
    said = world.caixa("explain", str(note), "--rules", str(world.rules))
    assert said.returncode == 0
    assert "not pdfs: content is text/plain, not ['application/pdf']" in said.stdout
    assert "rule 'texts' takes it" in said.stdout and "1. text" in said.stdout
    stray = world.root / "elsewhere.txt"
    stray.write_text("x\n")
    said = world.caixa("explain", str(stray), "--rules", str(world.rules))
    assert said.returncode == 1 and "no rule takes this file" in said.stdout
    said = world.caixa("explain", str(world.root / "gone.txt"), "--rules", str(world.rules))
    assert said.returncode == 5 and "gone.txt: no such file" in said.stderr


def test_schema_describes_rules_and_every_installed_step(world: World) -> None:
    printed = world.caixa("schema")
    schema = json.loads(printed.stdout)
    assert schema["additionalProperties"] is False
    steps = schema["$defs"]["Rule"]["properties"]["steps"]["items"]["anyOf"]
    assert {"const": "copy"} in steps and {"const": "sleepy"} in steps
    text = next(s for s in steps if "text" in s.get("properties", {}))
    assert "newline" in json.dumps(text)


def test_run_once_prints_a_summary(world: World) -> None:
    world.write_rules("rules: [{name: r, inbox: in, steps: [copy]}]\n")
    (world.inbox() / "a.txt").write_text("a\n")
    (world.inbox() / "b.txt").write_bytes(b"")
    (world.inbox() / "c.txt").write_text("a\n")
    done = world.run_once()
    assert "1 done, 1 duplicates, 1 failed" in done.stderr
    status = world.caixa("status", "--home", str(world.home))
    assert "1 done" in status.stdout and "1 failed" in status.stdout
    assert "b.txt" in status.stdout and "empty" in status.stdout and "caixa retry" in status.stdout


def test_run_once_on_a_terminal_shows_a_progress_bar(world: World) -> None:
    world.write_rules("rules: [{name: r, inbox: in, steps: [copy]}]\n")
    for i in range(20):
        (world.inbox() / f"f{i}.txt").write_text(f"{i}\n")
    command = f"{CAIXA} run --once --rules {world.rules} --home {world.home}"
    shown = subprocess.run(
        ["script", "-qec", command, "/dev/null"],  # a real pseudo-terminal
        env={**world.env, "CAIXA_LOG_LEVEL": "warning", "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stdout
    assert "processing" in shown.stdout and "20/20" in shown.stdout
    assert "20 done, 0 duplicates, 0 failed" in shown.stdout


def test_a_rule_can_force_polling(world: World) -> None:
    world.write_rules("rules: [{name: r, inbox: in, poll: true, steps: [copy]}]\n")
    world.env["CAIXA_POLL_INTERVAL"] = "0.3"
    world.env["CAIXA_SCAN_INTERVAL"] = "600"  # so only the poll can find the file
    world.inbox()
    world.start()
    world.wait_for(lambda: any(e["event"] == "inbox polled" for e in world.logs()))
    (world.inbox() / "polled.txt").write_text("found by polling\n")
    world.wait_for(lambda: world.finished() == 1)
    assert (world.outputs / "r/polled/polled.txt").read_text() == "found by polling\n"


def test_status_of_a_home_never_used_says_so(world: World) -> None:
    status = world.caixa("status", "--home", str(world.root / "typo"))
    assert status.returncode == 6
    assert "caixa has not run with this home" in status.stderr
    assert not (world.root / "typo").exists()
