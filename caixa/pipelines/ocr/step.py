"""OCR of scans and photos: `<stem>.txt` (pages separated by form feeds) and a searchable PDF.

Pages are read side by side, one tesseract process per page, each rendered in grayscale by
the worker that reads it (tesseract reads the same text ~1.6x faster than from RGB, and only
`workers` pages are ever in memory). The workers are threads: the heavy work runs in the
pdftoppm and tesseract processes they start, so a pool of Python processes would only add
start-up time and a fork from the daemon's threads.

A PDF whose pages already carry text is not read again (unless `force`): its text layer is
extracted instead. Orientation is checked only on pages that read badly (low confidence, or
words taller than wide), so upright pages pay nothing for it.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field
from pypdf import PdfReader, PdfWriter

from caixa.errors import InputError, StepError
from caixa.pipelines.base import Artifact, BaseStep, Requirements, StepInput, StepResult
from caixa.pipelines.common.images import FORMATS, KINDS, MAX_PIXELS, check_pixels, flatten, opened
from caixa.pipelines.common.programs import Program, versions
from caixa.pipelines.ocr import poppler, tesseract
from caixa.pipelines.ocr.tesseract import TESSERACT

PDF = "application/pdf"
MIN_LAYER_CHARS = 20  # a PDF page with fewer visible characters in its text layer is a scan
FILE_DPI = (100, 1200)  # an image's own DPI is trusted in this range (72 and 96 mean "unset")
SUSPECT_CONFIDENCE = 70.0  # a page read with less is checked for orientation
SIDEWAYS_SHARE = 0.5  # ... and so is one where most letters sit in words taller than wide
MIN_OSD_CONFIDENCE = 5.0  # tesseract's orientation confidence worth a second reading
KEEP_TURNED_MARGIN = 5.0  # a turned page is kept unless it reads this much worse
# OSD says how far to turn clockwise; PIL's transposes turn counter-clockwise.
TURN = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_90}  # fmt: skip


PDF_TOOLS = tuple(poppler.TOOLS.values())  # what a PDF goes through besides tesseract


class OcrParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    languages: str = Field("por+eng", pattern=r"^[\w/-]+(\+[\w/-]+)*$")  # tesseract's -l
    dpi: int = Field(300, ge=70, le=1200)  # to render PDF pages, and for images without one
    force: bool = False  # OCR a PDF even where it has a text layer
    max_pages: int = Field(500, ge=1)
    max_pixels: int = Field(MAX_PIXELS, ge=1)  # per page
    rotate: bool = True  # correct the orientation of pages lying sideways or upside down
    workers: int | None = Field(
        None, ge=1
    )  # tesseract processes at once; default: the lane's threads


@dataclass(frozen=True)
class Page:
    """One page to read: page `number` of a PDF, or frame `number - 1` of an image."""

    number: int
    source: Path
    is_pdf: bool
    dpi: int


@dataclass(frozen=True)
class PageText:
    number: int
    text: str
    pdf: Path
    confidence: float | None
    rotated: int  # degrees clockwise it was turned to read it upright
    seconds: float


class OcrStep(BaseStep):
    name: ClassVar[str] = "ocr"
    Params: ClassVar[type[BaseModel]] = OcrParams
    requires: ClassVar[Requirements] = Requirements(
        executables=("tesseract", "pdftoppm", "pdfinfo", "pdftotext")
    )

    def run(self, job: StepInput, params: OcrParams) -> StepResult:
        if job.media_type == PDF:
            return self._pdf(job, params)
        if job.media_type in FORMATS:
            return self._image(job, params)
        raise InputError(
            f"ocr reads PDFs and images ({KINDS}); this file is {job.media_type}. "
            "Point this rule's `match` at scans only, or convert the file"
        )

    def _pdf(self, job: StepInput, params: OcrParams) -> StepResult:
        info = poppler.info(job.source, params.max_pages)
        check_page_count(info.pages, params.max_pages)
        for number, (width, height) in enumerate(info.sizes, 1):
            w, h = round(width * params.dpi / 72), round(height * params.dpi / 72)
            hint = f"lower dpi (now {params.dpi}) or "
            check_pixels(f"page {number} at {params.dpi} dpi", w, h, params.max_pixels, hint)
        layer = [""] * info.pages if params.force else poppler.text_pages(job.source)
        layer += [""] * (info.pages - len(layer))
        scanned = [n for n in range(1, info.pages + 1) if not has_text(layer[n - 1])]
        target = job.workdir / "searchable.pdf"
        if not scanned:
            shutil.copyfile(job.source, target)
            return finish(
                job, params, [p.rstrip() for p in layer], target, [], info.pages, PDF_TOOLS
            )
        tesseract.check_languages(params.languages, osd=params.rotate)
        pages = [Page(n, job.source, True, params.dpi) for n in scanned]
        read = {p.number: p for p in read_pages(pages, job, params)}
        texts = [
            read[n].text if n in read else layer[n - 1].rstrip() for n in range(1, info.pages + 1)
        ]
        join_pdf(
            [read[n].pdf if n in read else n for n in range(1, info.pages + 1)], job.source, target
        )
        return finish(
            job, params, texts, target, list(read.values()), info.pages, (*PDF_TOOLS, TESSERACT)
        )

    def _image(self, job: StepInput, params: OcrParams) -> StepResult:
        dpis = inspect_image(job.source, params)
        tesseract.check_languages(params.languages, osd=params.rotate)
        pages = [Page(n, job.source, False, dpi) for n, dpi in enumerate(dpis, 1)]
        read = read_pages(pages, job, params)
        target = job.workdir / "searchable.pdf"
        join_pdf([p.pdf for p in read], None, target)
        return finish(job, params, [p.text for p in read], target, read, len(pages), (TESSERACT,))


def finish(
    job: StepInput,
    params: OcrParams,
    texts: list[str],
    pdf: Path,
    read: list[PageText],
    pages: int,
    ran: tuple[Program, ...],
) -> StepResult:
    """The artifacts and manifest facts; a document with no text at all fails clearly."""
    if not any(any(c.isalnum() for c in t) for t in texts):
        raise InputError(
            f"no text found on {'the page' if pages == 1 else f'any of the {pages} pages'} "
            f"(tesseract, languages {params.languages}): the scan may be blank, too faint or "
            "too small. Check the file, or try a higher dpi or other languages in the rule"
        )
    target = job.workdir / "text.txt"
    target.write_text("\f".join(texts) + "\n", encoding="utf-8")
    by_page = {p.number: p for p in read}
    data: dict[str, Any] = {"ocr": bool(read)}
    if not read:
        data["reason"] = "the PDF has a text layer"
    words = [c for p in read if (c := p.confidence) is not None]
    data |= {
        "pages": pages,
        "ocr_pages": sorted(by_page),
        "languages": params.languages.split("+"),
        "characters": sum(len(t) for t in texts),
        "empty_pages": [n for n, t in enumerate(texts, 1) if not t.strip()],
        "confidence": [
            _round(by_page[n].confidence) if n in by_page else None for n in range(1, pages + 1)
        ],
        "mean_confidence": _round(sum(words) / len(words)) if words else None,
        "rotated": [{"page": p.number, "degrees": p.rotated} for p in read if p.rotated],
        "seconds": [
            round(by_page[n].seconds, 2) if n in by_page else None for n in range(1, pages + 1)
        ],
        "programs": versions(*ran),
    }
    return StepResult(
        [
            Artifact(f"{job.stem}.txt", target, "text/plain; charset=utf-8"),
            Artifact(f"{job.stem}.pdf", pdf, PDF),
        ],
        data=data,
        models=[f"tesseract:{params.languages}"] if read else [],
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def has_text(page: str) -> bool:
    return sum(not c.isspace() for c in page) >= MIN_LAYER_CHARS


def check_page_count(pages: int, limit: int) -> None:
    if pages > limit:
        raise InputError(
            f"the document has {pages} pages, over this rule's limit of {limit} (max_pages); "
            "split it, or raise max_pages in the rule"
        )


def inspect_image(path: Path, params: OcrParams) -> list[int]:
    """The DPI to read each page at, after checking the page count and every page's pixels
    from the headers alone: a decompression bomb is refused before any pixel is decoded.
    Only TIFF pages count as pages (a JPEG's second frame is a camera's preview)."""
    with opened(path, params.max_pixels) as img:
        frames = img.n_frames if img.format == "TIFF" else 1
        check_page_count(frames, params.max_pages)
        dpis = []
        for frame in range(frames):
            img.seek(frame)
            what = f"page {frame + 1}" if frames > 1 else "the image"
            check_pixels(what, img.width, img.height, params.max_pixels)
            dpi = round(img.info.get("dpi", (0, 0))[0])
            dpis.append(dpi if FILE_DPI[0] <= dpi <= FILE_DPI[1] else params.dpi)
        return dpis


def read_pages(pages: list[Page], job: StepInput, params: OcrParams) -> list[PageText]:
    """Every page, in order, read by at most `workers` tesseract processes at once; how far
    it is goes to `job.progress` as pages come back in order."""
    workers = min(params.workers or job.threads, len(pages))
    with ThreadPoolExecutor(workers, thread_name_prefix="caixa-ocr") as pool:
        futures = [pool.submit(read_page, page, job.workdir, params) for page in pages]
        try:
            read = []
            for done, future in enumerate(futures, 1):
                read.append(future.result())
                job.progress(done / len(futures))
            return read
        except BaseException:
            for f in futures:
                f.cancel()  # the pages not started yet; the running ones end soon
            raise


def read_page(page: Page, workdir: Path, params: OcrParams) -> PageText:
    started = time.perf_counter()
    base = workdir / f"page-{page.number:05d}"
    try:
        image = render(page, base)
        try:
            found = tesseract.recognize(image, base, params.languages, page.dpi)
            turned = 0
            if params.rotate and misoriented(found):
                found, turned = reorient(image, base, found, page.dpi, params.languages)
        finally:
            image.unlink(missing_ok=True)
    except StepError as exc:
        raise type(exc)(f"page {page.number}: {exc}") from exc
    seconds = time.perf_counter() - started
    return PageText(page.number, found.text, found.pdf, found.confidence, turned, seconds)


def render(page: Page, base: Path) -> Path:
    """The page as an 8-bit grayscale, uncompressed TIFF: what tesseract reads fastest."""
    if page.is_pdf:
        return poppler.render_gray(page.source, page.number, page.dpi, base)
    target = base.with_name(base.name + ".tif")
    with Image.open(page.source) as img:
        img.seek(page.number - 1)
        flatten(ImageOps.exif_transpose(img) or img, "L").save(target)
    return target


def misoriented(found: tesseract.Recognition) -> bool:
    """Whether a page may lie the wrong way: upside down it reads as low-confidence noise;
    sideways, tesseract may read it right but the PDF page would still lie on its side."""
    confidence = found.confidence
    if confidence is None:
        return False  # no words: nothing to turn upright
    return confidence < SUSPECT_CONFIDENCE or found.sideways_share > SIDEWAYS_SHARE


def reorient(
    image: Path, base: Path, found: tesseract.Recognition, dpi: int, languages: str
) -> tuple[tesseract.Recognition, int]:
    """Ask tesseract's OSD how the page lies, on a half-size copy (measured ~1.5x cheaper than
    full size, still sure: confidence 20-27 on a page of text); read the page again turned
    upright, and keep that reading unless it is clearly worse."""
    small = image.with_name(image.stem + "-osd.tif")
    with Image.open(image) as img:
        img.reduce(2).save(small)
    try:
        seen = tesseract.orientation(small, dpi // 2)
    finally:
        small.unlink(missing_ok=True)
    if seen is None or seen.rotate == 0 or seen.confidence < MIN_OSD_CONFIDENCE:
        return found, 0
    with Image.open(image) as img:
        img.transpose(TURN[seen.rotate]).save(image)
    again = tesseract.recognize(image, base.with_name(base.name + "-turned"), languages, dpi)
    if (again.confidence or 0) >= (found.confidence or 0) - KEEP_TURNED_MARGIN:
        return again, seen.rotate
    return found, 0


def join_pdf(parts: list[Path | int], source: Path | None, target: Path) -> None:
    """One PDF from one-page PDFs (paths) and pages of `source` kept as they are (numbers)."""
    writer = PdfWriter()
    original = PdfReader(source) if source is not None else None
    for part in parts:
        if isinstance(part, Path):
            writer.append(part)
        elif original is not None:
            writer.add_page(original.pages[part - 1])
    with target.open("wb") as out:
        writer.write(out)
