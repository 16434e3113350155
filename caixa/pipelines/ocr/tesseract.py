"""The tesseract command line: one process per page, several outputs from one run.

One `tesseract IMG OUT txt pdf tsv` run reads a page once and writes its text, a one-page
searchable PDF and the word confidences; pytesseract would read and lay out the page once per
output. Every process gets OMP_THREAD_LIMIT=1: on a small machine tesseract's OpenMP threads
fight each other (4x slower on 2 cores), so caixa runs pages side by side instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from caixa.pipelines.common.programs import Program, ProgramError

PAGE_TIMEOUT_S = 600  # one page, at any size the pixel limit lets through
ENV = {**os.environ, "OMP_THREAD_LIMIT": "1"}


class TesseractError(ProgramError):
    """tesseract failed on a page, or cannot run with the languages asked for."""


TESSERACT = Program("tesseract", "tesseract-ocr", error=TesseractError)


@dataclass(frozen=True)
class Word:
    text: str
    confidence: float  # 0..100
    width: int
    height: int


@dataclass(frozen=True)
class Recognition:
    """What one run read on one page, and where it wrote the page's searchable PDF."""

    text: str
    pdf: Path
    words: tuple[Word, ...]

    @property
    def confidence(self) -> float | None:
        """Mean word confidence, 0..100; None when no word was found."""
        if not self.words:
            return None
        return sum(w.confidence for w in self.words) / len(self.words)

    @property
    def sideways_share(self) -> float:
        """Share of the letters in words taller than wide: near 1 on a page lying on its side,
        which tesseract may read but whose PDF page would still lie sideways."""
        letters = sum(len(w.text) for w in self.words)
        tall = sum(len(w.text) for w in self.words if w.height > w.width)
        return tall / letters if letters else 0.0


@dataclass(frozen=True)
class Orientation:
    rotate: int  # degrees clockwise that turn the page upright: 0, 90, 180 or 270
    confidence: float


@cache
def installed_languages() -> frozenset[str]:
    listed = _run(["--list-langs"], timeout=60)
    return frozenset(line.strip() for line in listed.splitlines()[1:] if line.strip())


def check_languages(languages: str, *, osd: bool) -> None:
    """Refuse, before any page is read, languages whose data is not installed."""
    wanted = languages.split("+") + (["osd"] if osd else [])
    missing = [lang for lang in wanted if lang not in installed_languages()]
    if missing:  # perhaps installed since this process asked: ask again before refusing
        installed_languages.cache_clear()
        missing = [lang for lang in wanted if lang not in installed_languages()]
    if missing:
        hint = "; or set `rotate: false` in the rule" if "osd" in missing else ""
        packages = ", ".join(f"tesseract-ocr-{m.lower().replace('_', '-')}" for m in missing)
        raise TesseractError(
            f"tesseract has no data for {', '.join(missing)} (installed: "
            f"{', '.join(sorted(installed_languages()))}); install {packages}{hint}"
        )


def recognize(image: Path, out_base: Path, languages: str, dpi: int) -> Recognition:
    """Text, word confidences and a one-page searchable PDF of one page image."""
    options = ["-l", languages, "--dpi", str(dpi)]
    _run([str(image), str(out_base), *options, "txt", "pdf", "tsv"])
    text = out_base.with_suffix(".txt").read_text(encoding="utf-8").rstrip("\f\n ")
    words = read_tsv(out_base.with_suffix(".tsv"))
    return Recognition(text, out_base.with_suffix(".pdf"), words)


def read_tsv(path: Path) -> tuple[Word, ...]:
    """The recognised words (level 5 rows with text and a confidence) of tesseract's TSV."""
    words = []
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        cells = line.split("\t")
        if len(cells) == 12 and cells[0] == "5" and cells[11].strip() and float(cells[10]) >= 0:
            words.append(Word(cells[11], float(cells[10]), int(cells[8]), int(cells[9])))
    return tuple(words)


ROTATE = re.compile(r"^Rotate: (\d+)$", re.MULTILINE)
CONFIDENCE = re.compile(r"^Orientation confidence: ([\d.]+)$", re.MULTILINE)


def orientation(image: Path, dpi: int) -> Orientation | None:
    """Tesseract's orientation and script detection (OSD); None when the page has too few
    letters to tell."""
    try:
        said = _run([str(image), "-", "--dpi", str(dpi), "--psm", "0"])
    except TesseractError:
        return None  # "Too few characters. Skipping this page"
    rotate, confidence = ROTATE.search(said), CONFIDENCE.search(said)
    if rotate is None or confidence is None:
        return None
    return Orientation(int(rotate.group(1)), float(confidence.group(1)))


def _run(args: list[str], timeout: float = PAGE_TIMEOUT_S) -> str:
    """Run tesseract; what it printed on stdout."""
    done = TESSERACT.run(args, timeout=timeout, what="one page", env=ENV)
    TESSERACT.check(done)
    return done.stdout.decode("utf-8", "replace")
