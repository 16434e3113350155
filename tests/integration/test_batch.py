"""Same-model batching through the real daemon: photos that wait for the accelerator lane
together are classified in one call, each manifest says how many ran together, each photo gets
the labels it gets alone, and a bad photo in a batch fails only its own job."""

from __future__ import annotations

import json

import pytest

from tests.conftest import World
from tests.photos import BUS, ZIDANE

RULES = """
rules:
  - name: photos
    inbox: photos
    match: {type: ["image/*"]}
    steps: [classify]
"""


def test_waiting_photos_are_classified_in_batches_and_a_bad_one_fails_alone(world: World) -> None:
    world.write_rules(RULES)
    inbox = world.inbox("photos")
    for i in range(5):  # bytes after the JPEG's end: same pixels, not duplicates
        (inbox / f"bus{i}.jpg").write_bytes(BUS.read_bytes() + b"copy%d" % i)
        (inbox / f"zidane{i}.jpg").write_bytes(ZIDANE.read_bytes() + b"copy%d" % i)
    (inbox / "cut.jpg").write_bytes(BUS.read_bytes()[:50_000])  # a copy that stopped halfway

    done = world.run_once(timeout=300)
    assert "10 done, 0 duplicates, 1 failed" in done.stderr, done.stderr

    batches, labels = [], {}
    for stem in [f"{kind}{i}" for kind in ("bus", "zidane") for i in range(5)]:
        folder = world.outputs / "photos" / stem
        (step,) = json.loads((folder / "manifest.json").read_text())["steps"]
        batches.append(step.get("batch", 1))
        if step.get("batch", 1) > 1:
            assert f"ran in a batch of {step['batch']}" in step["notes"]
        found = json.loads((folder / f"{stem}.labels.json").read_text())["labels"]
        labels.setdefault(stem.rstrip("0123456789"), []).append(
            [(x["label"], x["probability"]) for x in found]
        )
    assert max(batches) > 1, batches  # the model loads once while the others wait
    for kind, runs in labels.items():  # alone or in a batch, a photo gets the same labels
        for run in runs:  # and the same probabilities, but for float sums in another order
            assert [label for label, _ in run] == [label for label, _ in runs[0]], (kind, runs)
            assert [p for _, p in run] == pytest.approx([p for _, p in runs[0]], abs=1e-3)
    error = json.loads((world.failed / "photos" / "cut.jpg.error.json").read_text())
    assert "truncated" in error["message"]
