"""What the ocr step does with PDFs that have text already, and with inputs it must refuse:
each refusal is an InputError whose message says what is wrong and what to do."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader, PdfWriter

from caixa.errors import InputError
from caixa.pipelines.ocr import tesseract
from caixa.pipelines.ocr.poppler import BadPdfError
from caixa.pipelines.ocr.step import OcrParams, OcrStep
from tests.documents import (
    PORTUGUESE,
    blank_page,
    image_pdf,
    job_for,
    ocr,
    png_claiming,
    render_page,
    similarity,
    text_pdf,
)


def test_a_pdf_with_a_text_layer_is_not_ocred_and_says_so(tmp_path: Path) -> None:
    pages = [PORTUGUESE[0], PORTUGUESE[4]]
    result = ocr(text_pdf(pages, tmp_path / "digital.pdf"), tmp_path / "work")
    assert result.data["ocr"] is False
    assert result.data["reason"] == "the PDF has a text layer"
    assert result.data["ocr_pages"] == [] and result.models == []
    text = result.artifacts[0].path.read_text(encoding="utf-8")
    assert [similarity(t, p) for t, p in zip(text.split("\f"), pages, strict=True)] == [1.0, 1.0]
    assert result.artifacts[1].path.read_bytes() == (tmp_path / "digital.pdf").read_bytes()


def test_force_ocrs_a_pdf_that_has_a_text_layer(tmp_path: Path) -> None:
    result = ocr(text_pdf([PORTUGUESE[3]], tmp_path / "digital.pdf"), tmp_path / "w", force=True)
    assert result.data["ocr"] is True and result.data["ocr_pages"] == [1]
    assert similarity(result.artifacts[0].path.read_text(), PORTUGUESE[3]) >= 0.95


def test_in_a_mixed_pdf_only_the_scanned_pages_are_ocred(tmp_path: Path) -> None:
    scanned, printed = render_page(PORTUGUESE[5:6], inches=(8.27, 3), margin=0.5, seed=3)
    writer = PdfWriter()
    writer.append(text_pdf([PORTUGUESE[0]], tmp_path / "typed.pdf"))
    writer.append(image_pdf([scanned], tmp_path / "scanned.pdf"))
    writer.write(tmp_path / "mixed.pdf")
    result = ocr(tmp_path / "mixed.pdf", tmp_path / "work")
    assert result.data["ocr"] is True and result.data["ocr_pages"] == [2]
    assert result.data["confidence"][0] is None and result.data["confidence"][1] > 85
    typed, read = result.artifacts[0].path.read_text().split("\f")
    assert similarity(typed, PORTUGUESE[0]) == 1.0 and similarity(read, printed) >= 0.95
    assert len(PdfReader(result.artifacts[1].path).pages) == 2


def test_a_scan_says_how_far_it_is_page_by_page(tmp_path: Path) -> None:
    pages = [
        render_page([text], inches=(8.27, 2), margin=0.5, seed=n)[0]
        for n, text in enumerate(PORTUGUESE[:3])
    ]
    heard: list[float] = []
    job = replace(
        job_for(image_pdf(pages, tmp_path / "scan.pdf"), tmp_path / "work"), progress=heard.append
    )
    result = OcrStep().run(job, OcrParams())
    assert result.data["ocr_pages"] == [1, 2, 3]
    assert heard == [1 / 3, 2 / 3, 1.0]


def test_an_image_with_no_text_fails_saying_no_text_was_found(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    blank_page(dpi=60).save(blank)
    with pytest.raises(InputError, match="no text found on the page"):
        ocr(blank, tmp_path / "work")


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(tmp_path: Path) -> None:
    bomb = png_claiming(tmp_path / "bomb.png", 60_000, 60_000)  # 3.6 Gpx; never decoded
    with pytest.raises(InputError, match=r"claims 3,600,000,000 pixels.*decompression bomb"):
        ocr(bomb, tmp_path / "work")
    big = png_claiming(tmp_path / "big.png", 9_500, 9_000)  # under PIL's limit, over ours
    with pytest.raises(InputError, match=r"the image is 9500 x 9000 pixels .* max_pixels"):
        ocr(big, tmp_path / "work")


def test_a_pdf_page_that_would_render_over_the_pixel_limit_is_refused(tmp_path: Path) -> None:
    pdf = text_pdf([PORTUGUESE[0]], tmp_path / "a4.pdf")
    with pytest.raises(InputError, match=r"page 1 at 600 dpi is 4961 x 7016 pixels .* lower dpi"):
        ocr(pdf, tmp_path / "work", dpi=600, max_pixels=20_000_000, force=True)


def test_too_many_pages_are_refused(tmp_path: Path) -> None:
    tiff = tmp_path / "pages.tiff"
    page = Image.new("L", (300, 300), 255)
    page.save(tiff, save_all=True, append_images=[page, page])
    with pytest.raises(InputError, match="has 3 pages, over this rule's limit of 2"):
        ocr(tiff, tmp_path / "work", max_pages=2)


def test_a_corrupt_pdf_is_refused(tmp_path: Path) -> None:
    pdf = tmp_path / "corrupt.pdf"
    pdf.write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 20)
    with pytest.raises(BadPdfError, match=r"cannot read the PDF .*damaged or truncated"):
        ocr(pdf, tmp_path / "work")


def test_a_pdf_with_no_pages_is_refused(tmp_path: Path) -> None:
    PdfWriter().write(tmp_path / "empty.pdf")
    with pytest.raises(BadPdfError, match="the PDF has no pages"):
        ocr(tmp_path / "empty.pdf", tmp_path / "work")


def test_a_password_protected_pdf_is_refused(tmp_path: Path) -> None:
    writer = PdfWriter(clone_from=text_pdf([PORTUGUESE[0]], tmp_path / "open.pdf"))
    writer.encrypt("segredo")
    writer.write(tmp_path / "locked.pdf")
    with pytest.raises(BadPdfError, match="password protected"):
        ocr(tmp_path / "locked.pdf", tmp_path / "work")


def test_unsupported_files_are_refused_naming_what_is_read(tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("not a scan\n")
    with pytest.raises(InputError, match=r"ocr reads PDFs and images .* this file is text/plain"):
        ocr(note, tmp_path / "work")
    gif = tmp_path / "anim.gif"
    Image.new("L", (50, 50), 255).save(gif)
    with pytest.raises(InputError, match="image/gif"):
        ocr(gif, tmp_path / "work")


def test_a_language_with_no_data_installed_is_named_with_its_package() -> None:
    with pytest.raises(tesseract.TesseractError, match=r"no data for xyz.*tesseract-ocr-xyz"):
        tesseract.check_languages("por+xyz", osd=True)
    tesseract.check_languages("por+eng", osd=True)


def test_params_refuse_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match="extra"):
        OcrParams.model_validate({"langs": "por"})
    with pytest.raises(ValueError, match="languages"):
        OcrParams.model_validate({"languages": "por eng; rm -rf /"})
    defaults = OcrParams()
    assert (defaults.languages, defaults.dpi, defaults.force, defaults.rotate) == (
        "por+eng",
        300,
        False,
        True,
    )
