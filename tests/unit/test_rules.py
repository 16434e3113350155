"""rules.yaml: validation messages name file:line and key and say what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from caixa.config import rules
from caixa.errors import RulesError


def load(tmp_path: Path, text: str) -> rules.RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return rules.load(path)


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(RulesError) as caught:
        load(tmp_path, text)
    return str(caught.value).replace(str(tmp_path / "rules.yaml"), "rules.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rules:\n  - name: a\n    inbox: in\n    steps: [copy]\n    on_succes: keep\n",
            "rules.yaml:5: rules[0].on_succes: unknown key 'on_succes' (allowed: name, inbox,",
        ),
        (
            "rules:\n  - name: a\n    inbox: in\n    steps: [copy]\n    on_success: shred\n",
            "rules.yaml:5: rules[0].on_success: Input should be 'archive', 'delete' or 'keep'",
        ),
        (
            "rules:\n  - name: a\n    inbox: in\n",
            "rules.yaml:2: rules[0].steps: missing key 'steps'",
        ),
        (
            "defaults:\n  ouputs: out\nrules: [{name: a, inbox: in, steps: [copy]}]\n",
            "rules.yaml:2: defaults.ouputs: unknown key 'ouputs' (allowed: outputs, processed,",
        ),
        (
            "rules:\n  - name: a\n    inbox: in\n    steps:\n      - text: {newline: cr}\n",
            "rules.yaml:5: rules[0].steps[0].text.newline: Input should be 'lf' or 'crlf'",
        ),
        (
            "rules:\n  - name: a\n    inbox: in\n    steps:\n      - text: {lang: pt}\n",
            "rules.yaml:5: rules[0].steps[0].text.lang: unknown key 'lang' (allowed: encoding, newline)",
        ),
        (  # a key that looks like one of pydantic's own tags is still the file's key
            "rules:\n  - name: a\n    inbox: in\n    steps:\n      - copy: {'[': 1}\n",
            "rules.yaml:5: rules[0].steps[0].copy.[: unknown key '[' (allowed: none)",
        ),
        (
            "rules:\n  - name: a\n    inbox: in\n    steps: [copy]\n    output: '{rule}/{nome}'\n",
            "rules.yaml:5: rules[0].output: output template uses {nome}, which is not known",
        ),
        (
            "rules:\n  - {name: a, inbox: in, steps: [copy]}\n  - {name: a, inbox: x, steps: [copy]}\n",
            "rules.yaml:3: rules[1].name: rule name 'a' is used twice",
        ),
        ("rules:\n  - name: a\n    inbox: [in\n", "rules.yaml:4: "),
        ("rules:\n  - name: a\n    name: b\n", "rules.yaml:3: key 'name' is given twice"),
        (
            "rules:\n  - name: ../up\n    inbox: in\n    steps: [copy]\n",
            "rules.yaml:2: rules[0].name:",
        ),
        ("rules:\n  - name: a\n    inbox: in\n    steps: [{a: 1, b: 2}]\n", "rules.yaml:4:"),
        ("", "rules.yaml:1: rules: missing key 'rules'"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error(tmp_path, text)


def test_a_missing_rules_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="no such rules file"):
        rules.load(tmp_path / "nope.yaml")


def test_defaults_apply_and_paths_are_relative_to_the_rules_file(tmp_path: Path) -> None:
    ruleset = load(
        tmp_path,
        """
defaults: {outputs: out, on_success: keep, recursive: true}
rules:
  - {name: a, inbox: [in, ~/elsewhere], steps: [copy, {text: null}]}
  - {name: b, inbox: in2, steps: [copy], on_success: delete, recursive: false, poll: true}
""",
    )
    a, b = ruleset.rules
    assert ruleset.outputs == tmp_path / "out"
    assert a.inboxes == (tmp_path / "in", Path.home() / "elsewhere")
    assert (a.on_success, a.recursive, b.on_success, b.recursive) == ("keep", True, "delete", False)
    assert [s.name for s in a.steps] == ["copy", "text"]
    assert a.steps[1].params == {"encoding": "auto", "newline": "lf"}  # defaults filled in
    assert ruleset.inboxes()[tmp_path / "in2"] == (False, True)


def test_unavailable_steps_make_a_rule_wait_with_the_reason(tmp_path: Path) -> None:
    ruleset = load(
        tmp_path,
        "rules:\n  - {name: a, inbox: in, steps: [lipread, needs_missing, broken, copy]}\n",
    )
    (rule,) = ruleset.rules
    assert not rule.active
    unknown, missing, broken = rule.unavailable
    assert unknown.startswith("lipread: no step named 'lipread' is installed (known: broken,")
    assert "python package 'caixa_no_such_module'" in missing
    assert "program 'caixa-no-such-tool'" in missing
    assert "pip install 'caixa[vision]'" in missing
    assert broken.startswith("broken: caixa_test_steps:DoesNotExist does not load")


def test_first_matching_rule_wins_by_inbox_glob_and_content(tmp_path: Path) -> None:
    ruleset = load(
        tmp_path,
        """
rules:
  - {name: pdf, inbox: in, match: {type: application/pdf}, steps: [copy]}
  - {name: txt, inbox: in, match: {glob: ["*.TXT", "notes/*.md"]}, steps: [copy], recursive: true}
  - {name: any, inbox: in, steps: [copy]}
""",
    )
    inbox = tmp_path / "in"
    (inbox / "notes").mkdir(parents=True)
    for name, data in {"a.txt": b"hi", "b.pdf": b"%PDF-1.4\n", "c.bin": b"\x00"}.items():
        (inbox / name).write_bytes(data)
    (inbox / "notes" / "d.md").write_text("# hi")
    decided = {n: ruleset.decide(inbox / n).rule.name for n in ["a.txt", "b.pdf", "c.bin"]}
    assert decided == {"a.txt": "txt", "b.pdf": "pdf", "c.bin": "any"}
    nested = ruleset.decide(inbox / "notes" / "d.md")
    assert nested.rule.name == "txt" and nested.rel == "notes/d.md"
    assert ruleset.decide(tmp_path / "outside.txt").rule is None


def test_rule_version_changes_with_the_pipeline_not_with_formatting(tmp_path: Path) -> None:
    one = load(tmp_path, "rules: [{name: a, inbox: in, steps: [copy]}]\n").rules[0]
    two = load(tmp_path, "rules:\n  - name: a\n    inbox: in\n    steps:\n      - copy\n").rules[0]
    three = load(tmp_path, "rules: [{name: a, inbox: in, steps: [copy, metadata]}]\n").rules[0]
    assert one.version == two.version != three.version
