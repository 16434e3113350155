"""OCR of real scans with the real tesseract: what was printed comes back as text, page by
page, in reading order, upright, and in a searchable PDF."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader

from caixa.pipelines.base import StepResult
from tests.documents import PORTUGUESE, ocr, render_page, scanned_pdf, similarity


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> tuple[StepResult, list[str]]:
    """A 3-page image-only PDF at 300 dpi with light noise (page 2 in two columns), read once."""
    root = tmp_path_factory.mktemp("scan")
    layouts = [(PORTUGUESE[0:2], 1), (PORTUGUESE[2:6], 2), (PORTUGUESE[1:2], 1)]
    printed = scanned_pdf(root / "relatório.pdf", layouts)
    return ocr(root / "relatório.pdf", root / "work"), printed


def test_a_scanned_pdf_reads_back_as_its_text_page_by_page(
    scan: tuple[StepResult, list[str]],
) -> None:
    result, printed = scan
    text_artifact = result.artifacts[0]
    assert text_artifact.name == "relatório.txt"
    assert text_artifact.media_type.startswith("text/plain")
    text = text_artifact.path.read_text(encoding="utf-8")
    pages = text.split("\f")
    assert len(pages) == 3
    for page, source in zip(pages, printed, strict=True):  # page 2: column 1, then column 2
        assert similarity(page, source) >= 0.95, page
    assert similarity(text, "\n".join(printed)) >= 0.95
    assert "construído" in text and "açoriano" in text and "Conceição" in text


def test_the_manifest_says_what_was_read_and_how_well(scan: tuple[StepResult, list[str]]) -> None:
    data = scan[0].data
    assert data["ocr"] is True
    assert data["pages"] == 3 and data["ocr_pages"] == [1, 2, 3]
    assert data["languages"] == ["por", "eng"]
    assert len(data["confidence"]) == 3 and min(data["confidence"]) > 85
    assert data["rotated"] == [] and data["empty_pages"] == []
    assert len(data["seconds"]) == 3 and all(s > 0 for s in data["seconds"])
    assert scan[0].models == ["tesseract:por+eng"]


def test_the_searchable_pdf_has_every_page_and_a_text_layer(
    scan: tuple[StepResult, list[str]],
) -> None:
    pdf = scan[0].artifacts[1]
    assert (pdf.name, pdf.media_type) == ("relatório.pdf", "application/pdf")
    assert len(PdfReader(pdf.path).pages) == 3
    layer = subprocess.run(
        ["pdftotext", str(pdf.path), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "biblioteca" in layer and "farol" in layer and "padaria" in layer


def test_pages_lying_sideways_or_upside_down_are_turned_upright(tmp_path: Path) -> None:
    page, printed = render_page(PORTUGUESE[2:3], inches=(5.5, 3), margin=0.5, seed=7)
    tiff = tmp_path / "virado.tiff"  # a multi-page TIFF: each page is a page
    page.rotate(90, expand=True).save(
        tiff, save_all=True, append_images=[page.rotate(180)], dpi=(300, 300)
    )
    result = ocr(tiff, tmp_path / "work")
    assert result.data["rotated"] == [{"page": 1, "degrees": 90}, {"page": 2, "degrees": 180}]
    for text in result.artifacts[0].path.read_text().split("\f"):
        assert similarity(text, printed) >= 0.95
    assert min(result.data["confidence"]) > 85
    upright = PdfReader(result.artifacts[1].path).pages[0].mediabox
    assert upright.width > upright.height  # the page the PDF shows is the turned one


def test_with_rotate_off_an_upside_down_page_is_read_as_it_lies(tmp_path: Path) -> None:
    page, printed = render_page(PORTUGUESE[3:4], inches=(5.5, 3), margin=0.5, seed=8)
    png = tmp_path / "upside.png"
    page.rotate(180).save(png)
    result = ocr(png, tmp_path / "work", rotate=False)
    assert result.data["rotated"] == []
    assert similarity(result.artifacts[0].path.read_text(), printed) < 0.5


@pytest.mark.parametrize(
    "kind", ["png", "jpeg", "webp", "bmp", "rgba-png", "16-bit-png", "exif-rotated-jpeg"]
)
def test_every_image_format_reads(tmp_path: Path, kind: str) -> None:
    page, printed = render_page(PORTUGUESE[5:6], inches=(5.5, 2.5), margin=0.4, seed=9)
    path = tmp_path / f"foto.{kind.rsplit('-', 1)[-1]}"
    if kind == "rgba-png":  # black text on transparent black, as screenshots may have it
        black = Image.new("L", page.size, 0)
        Image.merge("RGBA", [black, black, black, page.point(lambda v: 255 - v)]).save(path)
    elif kind == "16-bit-png":  # every tone above 255: clipping to 8 bits would lose the text
        page.convert("I").point(lambda v: v * 200 + 12000).convert("I;16").save(path)
    elif kind == "exif-rotated-jpeg":  # a phone photo: pixels sideways, EXIF says how to show
        exif = Image.Exif()
        exif[0x0112] = 6  # Orientation: turn 90 degrees clockwise to display
        page.rotate(90, expand=True).save(path, exif=exif)
    else:
        page.save(path)
    result = ocr(path, tmp_path / "work")
    assert similarity(result.artifacts[0].path.read_text(), printed) >= 0.95
    assert result.data["pages"] == 1 and result.data["rotated"] == []
