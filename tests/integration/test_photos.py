"""The photos pipeline through the real daemon, as a user runs it: photos dropped in an inbox
get their detections, an annotated copy and labels, become searchable, and bad image files
(truncated, a decompression bomb, a format caixa does not read) fail with a clear error.json
while the good ones go through. One daemon run: the models load once."""

from __future__ import annotations

import json
import shutil

from PIL import Image

from tests.conftest import World
from tests.documents import png_claiming
from tests.photos import BUS, VEHICLES, ZIDANE

RULES = """
rules:
  - name: photos
    inbox: photos
    match: {type: ["image/*"]}
    steps: [detect, classify, index]
"""


def test_photos_are_seen_labelled_and_found_and_bad_images_fail_clearly(world: World) -> None:
    world.write_rules(RULES)
    inbox = world.inbox("photos")
    shutil.copyfile(BUS, inbox / "bus.jpg")
    shutil.copyfile(ZIDANE, inbox / "zidane.jpg")
    (inbox / "cut.jpg").write_bytes(BUS.read_bytes()[:50_000])  # a copy that stopped halfway
    png_claiming(inbox / "bomb.png", 60_000, 60_000)  # 3.6 Gpx claimed in ~100 bytes
    Image.new("RGB", (64, 64), "red").save(inbox / "red.gif")

    done = world.run_once(timeout=300)
    assert "2 done, 0 duplicates, 3 failed" in done.stderr, done.stderr

    for stem, people in [("bus", 3), ("zidane", 2)]:
        folder = world.outputs / "photos" / stem
        report = json.loads((folder / f"{stem}.detections.json").read_text())
        assert len(report["detections"]) >= people
        with Image.open(folder / f"{stem}.annotated.jpg") as drawn:
            assert drawn.format == "JPEG" and drawn.size == (report["width"], report["height"])
        assert (folder / f"{stem}.labels.json").exists()
        manifest = json.loads((folder / "manifest.json").read_text())
        assert [s["name"] for s in manifest["steps"]] == ["detect", "classify", "index"]
        assert manifest["steps"][2]["data"]["texts"][0]["name"] == f"{stem}.detections.txt"
    bus = json.loads((world.outputs / "photos/bus/bus.labels.json").read_text())["labels"]
    assert VEHICLES & {x["label"] for x in bus}

    errors = {
        name: json.loads((world.failed / "photos" / f"{name}.error.json").read_text())["message"]
        for name in ["cut.jpg", "bomb.png", "red.gif"]
    }
    assert "truncated" in errors["cut.jpg"] and "cut short" in errors["cut.jpg"]
    assert "3,600,000,000 pixels" in errors["bomb.png"]
    assert "decompression bomb" in errors["bomb.png"]
    assert "detect reads images (JPEG, PNG, WebP, TIFF, BMP)" in errors["red.gif"]
    assert "image/gif" in errors["red.gif"]

    found = world.caixa(
        "search", "bus", "--json", "--home", str(world.home), "--rules", str(world.rules)
    )
    assert found.returncode == 0, found.stderr
    first = json.loads(found.stdout)["hits"][0]
    assert first["file"] == "bus.jpg", first
    # people, found by a Portuguese word for them: the packaged detector's "Normal" is a person
    found = world.caixa(
        "search", "pessoas", "--json", "--home", str(world.home), "--rules", str(world.rules)
    )
    assert {h["file"] for h in json.loads(found.stdout)["hits"][:2]} == {"bus.jpg", "zidane.jpg"}
