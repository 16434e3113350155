"""The poppler command line tools: pdfinfo (pages and their sizes), pdftoppm (one page as a
grayscale image) and pdftotext (the text layer).

The tools are called directly rather than through pdf2image: a page goes from pdftoppm to an
image file that tesseract reads as is, with no decode into Python and no re-encode on the way.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from caixa.errors import InputError
from caixa.pipelines.common.programs import Program, ProgramError

TIMEOUT_S = 300


class PopplerError(ProgramError):
    """A poppler tool is missing or failed for a reason other than the PDF itself."""


TOOLS = {
    name: Program(name, "poppler-utils", ("-v",), error=PopplerError)
    for name in ("pdfinfo", "pdftoppm", "pdftotext")
}


class BadPdfError(InputError):
    """The PDF cannot be read: damaged, truncated, password protected, or with no pages."""


@dataclass(frozen=True)
class PdfInfo:
    pages: int
    sizes: tuple[tuple[float, float], ...]  # (width, height) in points, per page


PAGES = re.compile(r"^Pages:\s+(\d+)$", re.MULTILINE)
SIZE = re.compile(r"^Page\s+(\d+) size:\s+([\d.]+) x ([\d.]+) pts", re.MULTILINE)


def info(pdf: Path, max_pages: int) -> PdfInfo:
    """The page count, and the size of each page up to `max_pages` (a bigger PDF is refused
    before its sizes are read)."""
    done = _run(["pdfinfo", str(pdf)], pdf, allow=frozenset({99}))
    if "Invalid page count 0" in done.stderr or done.returncode == 99:
        raise BadPdfError("the PDF has no pages; nothing to read")
    found = PAGES.search(done.stdout)
    if found is None:
        said = " ".join(done.stderr.split())[-300:] or f"exit status {done.returncode}"
        raise BadPdfError(f"cannot read the PDF: pdfinfo found no page count ({said})")
    pages = int(found.group(1))
    if pages == 0:
        raise BadPdfError("the PDF has no pages; nothing to read")
    last = min(pages, max_pages)
    sized = _run(["pdfinfo", "-f", "1", "-l", str(last), str(pdf)], pdf)
    sizes = tuple((float(w), float(h)) for _, w, h in SIZE.findall(sized.stdout))
    return PdfInfo(pages, sizes)


def render_gray(pdf: Path, page: int, dpi: int, out_base: Path) -> Path:
    """Page `page` (1-based) as an 8-bit grayscale, uncompressed TIFF at `dpi`:
    `out_base`.tif. Tesseract (leptonica) reads it ~0.2 s faster per A4 page at 300 dpi than
    a PGM, which it reads a byte at a time, and with no decompression."""
    command = ["pdftoppm", "-gray", "-tiff", "-tiffcompression", "none", "-r", str(dpi)]
    _run([*command, "-f", str(page), "-l", str(page), "-singlefile", str(pdf), str(out_base)], pdf)
    return out_base.with_name(out_base.name + ".tif")


def text_pages(pdf: Path) -> list[str]:
    """The text layer, one string per page (empty for a page with no text)."""
    done = _run(["pdftotext", "-enc", "UTF-8", str(pdf), "-"], pdf)
    pages = done.stdout.split("\f")
    return pages[:-1] if pages and not pages[-1].strip() else pages


def _run(
    command: list[str], pdf: Path, allow: frozenset[int] = frozenset()
) -> subprocess.CompletedProcess[str]:
    """Run a poppler tool; its exit status says whose fault a failure is (1: the PDF cannot be
    opened, 3: its permissions forbid it; anything else is the tool's or the system's)."""
    tool = TOOLS[command[0]]
    ran = tool.run(command[1:], timeout=TIMEOUT_S, what=pdf.name)
    done = subprocess.CompletedProcess(
        ran.args,
        ran.returncode,
        ran.stdout.decode("utf-8", "replace"),
        ran.stderr.decode("utf-8", "replace"),
    )
    if done.returncode == 0 or done.returncode in allow:
        return done
    detail = tool.failed(ran)
    if "Incorrect password" in detail:
        raise BadPdfError(
            "the PDF is password protected; save a copy without a password and drop that"
        )
    if done.returncode == 1:
        raise BadPdfError(
            f"cannot read the PDF ({detail}): it may be damaged or truncated; "
            "export or scan it again"
        )
    if done.returncode == 3:
        raise BadPdfError(f"the PDF's permissions forbid this ({detail})")
    raise PopplerError(f"{command[0]} failed on {pdf.name}: {detail}")
