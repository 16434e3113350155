"""The documents pipeline end to end, as a user runs it: a 3-page Portuguese scan dropped among
30 other documents is read, translated to English and indexed, and `caixa search` finds it
first in either language."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import World
from tests.documents import PORTUGUESE, scanned_pdf, similarity

CORPUS = json.loads((Path(__file__).parents[1] / "data" / "bilingual.json").read_text())

RULES = """
rules:
  - name: scans
    inbox: scans
    match: {type: [application/pdf, "image/*"]}
    steps: [ocr, {translate: {to: en}}, index]
  - name: notes
    inbox: notes
    steps: [text, index]
"""


def test_a_portuguese_scan_is_read_translated_and_found_in_both_languages(world: World) -> None:
    world.write_rules(RULES)
    for doc in CORPUS:
        (world.inbox("notes") / f"{doc['id']}.txt").write_text(doc["text"])
    printed = scanned_pdf(
        world.inbox("scans") / "cidade.pdf",
        [(PORTUGUESE[0:2], 1), (PORTUGUESE[2:4], 2), (PORTUGUESE[4:6], 1)],  # page 2: columns
    )
    done = world.run_once(timeout=600)
    assert "31 done, 0 duplicates, 0 failed" in done.stderr

    folder = world.outputs / "scans" / "cidade"
    pages = (folder / "cidade.txt").read_text().split("\f")
    for read, text in zip(pages, printed, strict=False):
        assert similarity(read, text) >= 0.95
    assert (folder / "cidade.pdf").exists()  # the searchable PDF

    english = (folder / "cidade.en.txt").read_text().lower()
    for word in ["library", "rain", "lighthouse", "bread", "trees", "telescope"]:
        assert word in english, word
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [s["name"] for s in manifest["steps"]] == ["ocr", "translate", "index"]
    assert manifest["steps"][1]["data"]["source_language"] == "pt"

    for query in [
        "the lighthouse that guides the fishermen back to the harbour",  # English -> Portuguese scan
        "farol que orienta os pescadores no regresso ao porto",
        "restored telescope to watch the craters of the moon",
        "pão quente da padaria e pastéis de nata",
    ]:
        found = world.caixa(
            "search", query, "--json", "--home", str(world.home), "--rules", str(world.rules)
        )
        assert found.returncode == 0, found.stderr
        first = json.loads(found.stdout)["hits"][0]
        assert first["file"] == "cidade.pdf", (query, first)
        assert Path(first["folder"]) == folder
