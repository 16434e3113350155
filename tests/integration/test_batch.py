"""Same-model batching through the real daemon: photos that wait for the accelerator lane
together are classified (or looked at for objects) in one call, each manifest says how many
ran together, each photo gets the labels (the boxes) it gets alone, and a bad photo in a batch
fails only its own job."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import World
from tests.photos import BUS, ZIDANE

RULES = """
rules:
  - name: photos
    inbox: photos
    match: {type: ["image/*"]}
    steps: [STEP]
"""


def labels(report: dict[str, Any]) -> list[tuple[str, list[float]]]:
    """classify's labels with their probability, detect's labels with their box."""
    if "labels" in report:
        return [(x["label"], [x["probability"]]) for x in report["labels"]]
    return [(x["label"], x["box"]) for x in report["detections"]]


@pytest.mark.parametrize(("step", "report"), [("classify", "labels"), ("detect", "detections")])
def test_waiting_photos_run_in_batches_and_a_bad_one_fails_alone(
    world: World, step: str, report: str
) -> None:
    world.write_rules(RULES.replace("STEP", step))
    inbox = world.inbox("photos")
    for i in range(5):  # bytes after the JPEG's end: same pixels, not duplicates
        (inbox / f"bus{i}.jpg").write_bytes(BUS.read_bytes() + b"copy%d" % i)
        (inbox / f"zidane{i}.jpg").write_bytes(ZIDANE.read_bytes() + b"copy%d" % i)
    (inbox / "cut.jpg").write_bytes(BUS.read_bytes()[:50_000])  # a copy that stopped halfway

    done = world.run_once(timeout=300)
    assert "10 done, 0 duplicates, 1 failed" in done.stderr, done.stderr

    batches, found = [], {}
    for stem in [f"{kind}{i}" for kind in ("bus", "zidane") for i in range(5)]:
        folder = world.outputs / "photos" / stem
        (ran,) = json.loads((folder / "manifest.json").read_text())["steps"]
        batches.append(ran.get("batch", 1))
        if ran.get("batch", 1) > 1:
            assert f"ran in a batch of {ran['batch']}" in ran["notes"]
        made = json.loads((folder / f"{stem}.{report}.json").read_text())
        found.setdefault(stem.rstrip("0123456789"), []).append(labels(made))
    assert max(batches) > 1, batches  # the model loads once while the others wait
    for kind, runs in found.items():  # alone or in a batch, a photo gets the same labels
        assert runs[0], kind
        for run in runs:  # and the same figures, but for float sums in another order
            assert [label for label, _ in run] == [label for label, _ in runs[0]], (kind, runs)
            for (_, figures), (_, first) in zip(run, runs[0], strict=True):
                assert figures == pytest.approx(first, abs=1e-3 if step == "classify" else 1.0)
    error = json.loads((world.failed / "photos" / "cut.jpg.error.json").read_text())
    assert "truncated" in error["message"]
