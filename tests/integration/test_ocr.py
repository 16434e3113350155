"""Scans dropped into an inbox with an `ocr` rule, through a real daemon: the good ones become
text and a searchable PDF, the bad ones land in failed/ with a message a user can act on."""

from __future__ import annotations

import json

from pypdf import PdfWriter

from tests.conftest import World
from tests.documents import (
    PORTUGUESE,
    blank_page,
    image_pdf,
    png_claiming,
    render_page,
    similarity,
    text_pdf,
)

RULES = """
rules:
  - name: scans
    inbox: in
    steps: [ocr]
"""


def test_scans_become_text_and_bad_ones_fail_clearly(world: World) -> None:
    world.write_rules(RULES)
    inbox = world.inbox()
    page, printed = render_page(PORTUGUESE[1:3], inches=(8.27, 5), margin=0.6, seed=11)
    image_pdf([page], inbox / "carta.pdf")
    text_pdf([PORTUGUESE[4]], inbox / "digital.pdf")
    (inbox / "corrupt.pdf").write_bytes(b"%PDF-1.7\n1 0 obj\n<< /Type /Catalog\n" + b"\0" * 900)
    PdfWriter().write(inbox / "vazio.pdf")
    blank_page(dpi=60).save(inbox / "branco.png")
    png_claiming(inbox / "bomba.png", 60_000, 60_000)
    (inbox / "notas.txt").write_text("não é uma digitalização\n")

    done = world.run_once()
    assert "2 done, 0 duplicates, 5 failed" in done.stderr

    out = world.outputs / "scans"
    assert sorted(p.name for p in (out / "carta").iterdir()) == [
        "carta.pdf",
        "carta.txt",
        "manifest.json",
    ]
    assert similarity((out / "carta" / "carta.txt").read_text(encoding="utf-8"), printed) >= 0.95
    (carta,) = json.loads((out / "carta" / "manifest.json").read_text())["steps"]
    assert carta["name"] == "ocr" and carta["artifacts"] == ["carta.txt", "carta.pdf"]
    assert carta["data"]["ocr"] is True and carta["data"]["confidence"][0] > 85
    assert carta["models"] == ["tesseract:por+eng"]

    (digital,) = json.loads((out / "digital" / "manifest.json").read_text())["steps"]
    assert digital["data"]["ocr"] is False
    assert digital["data"]["reason"] == "the PDF has a text layer"
    assert "oliveira" in (out / "digital" / "digital.txt").read_text(encoding="utf-8")

    expected = {
        "corrupt.pdf": "cannot read the PDF",
        "vazio.pdf": "the PDF has no pages",
        "branco.png": "no text found on the page",
        "bomba.png": "decompression bomb",
        "notas.txt": "ocr reads PDFs and images",
    }
    for name, words in expected.items():
        error = json.loads((world.failed / "scans" / f"{name}.error.json").read_text())
        assert words in error["message"], error
        assert error["step"] == "ocr" and "traceback" not in error
        assert (world.failed / "scans" / name).exists()
