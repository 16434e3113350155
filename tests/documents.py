"""Documents made for tests and benchmarks: text pages rendered like a scan (a real font at a
real DPI, light seeded noise), image-only PDFs of them, PDFs with a real text layer, and the
ocr step run on a file as the daemon runs it.

The text comes back with the page so a test can compare what OCR read with what was printed.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont
from rapidfuzz.distance import Levenshtein

from caixa.filetypes import sniff
from caixa.pipelines.base import StepInput, StepResult
from caixa.pipelines.ocr.step import OcrParams, OcrStep

FONTS = Path("/usr/share/fonts/truetype/dejavu")
SANS = FONTS / "DejaVuSans.ttf"
SERIF = FONTS / "DejaVuSerif.ttf"
A4_INCHES = (8.27, 11.69)

# Portuguese with every accent the language uses; each paragraph has a few distinctive words
# (biblioteca, chuva, farol, padaria, ...) that a translation or a search can be checked for.
PORTUGUESE = [
    "A biblioteca municipal de Coimbra abriu uma nova sala de leitura. Os estudantes chegam "
    "cedo, à procura de silêncio e de mesas perto das janelas, onde a luz da manhã é mais "
    "suave. A coleção inclui mapas antigos, jornais do século dezanove e uma secção inteira "
    "dedicada à poesia galega.",
    "Durante o inverno, a chuva cai quase todos os dias sobre a cidade. As ruas estreitas "
    "ficam escorregadias e os comerciantes põem toldos coloridos para proteger as montras. "
    "Ninguém se queixa: a água enche os reservatórios e garante a colheita do verão.",
    "O farol da ilha foi construído em mil oitocentos e cinquenta e sete. Ainda hoje orienta "
    "os pescadores que regressam ao porto depois da meia-noite. O guarda do farol explicou "
    "que a lâmpada gira devagar e que o seu brilho alcança vinte milhas náuticas.",
    "Na padaria da esquina, o pão sai do forno às seis horas. A senhora Conceição vende "
    "broa de milho, pastéis de nata e bolo de mel. Os vizinhos formam uma fila tranquila e "
    "conversam sobre o preço do café, a saúde dos netos e o próximo jogo de futebol.",
    "A associação de moradores aprovou um plano para plantar árvores em todas as praças. "
    "Cada família poderá adotar uma oliveira ou um carvalho e cuidar dela durante três anos. "
    "A câmara municipal fornece a água, as ferramentas e a orientação de um jardineiro.",
    "O museu de ciência recebeu um telescópio restaurado que pertenceu a um astrónomo "
    "açoriano. À noite, os visitantes observam as crateras da lua e os anéis de Saturno. "
    "As crianças fazem perguntas difíceis e os monitores respondem com paciência.",
]


def pixels(points: float, dpi: int) -> int:
    return round(points * dpi / 72)


def wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Lines of `text` that fit in `width` pixels, breaking between words."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    if line:
        lines.append(line)
    return lines


def render_page(
    paragraphs: Sequence[str],
    *,
    columns: int = 1,
    dpi: int = 300,
    inches: tuple[float, float] = A4_INCHES,
    points: float = 11,
    font: Path = SERIF,
    margin: float = 1.0,
    noise: float = 12.0,
    seed: int = 0,
) -> tuple[Image.Image, str]:
    """A grayscale page like a clean office scan, and its text in reading order (column 1,
    then column 2; paragraphs separated by blank lines). `margin` is in inches.

    `noise` is the standard deviation of Gaussian grain in gray levels; a few dark specks are
    added too. Both are seeded, so a page is the same on every run.
    """
    width, height = round(inches[0] * dpi), round(inches[1] * dpi)
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    face = ImageFont.truetype(str(font), pixels(points, dpi))
    margin, gutter = round(margin * dpi), dpi // 3  # a third of an inch between columns
    column_width = (width - 2 * margin - gutter * (columns - 1)) // columns
    leading = pixels(points * 1.35, dpi)
    per_column = -(-len(paragraphs) // columns)  # ceil: fill column 1 first
    for c in range(columns):
        x, y = margin + c * (column_width + gutter), margin
        for paragraph in paragraphs[c * per_column : (c + 1) * per_column]:
            for line in wrap(paragraph, face, column_width):
                if y + leading > height - margin:
                    raise ValueError("the text does not fit on the page; use fewer paragraphs")
                draw.text((x, y), line, font=face, fill=0)
                y += leading
            y += leading // 2
    return add_noise(page, noise, seed), "\n\n".join(paragraphs)


def add_noise(page: Image.Image, sigma: float, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    values = np.asarray(page, dtype=np.float32)
    values = values + rng.normal(0, sigma, values.shape)
    specks = rng.random(values.shape) < 0.0004
    values[specks] = rng.uniform(0, 120, int(specks.sum()))
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")


def blank_page(dpi: int = 150, noise: float = 6.0, seed: int = 0) -> Image.Image:
    """A page with no text at all: paper grain only."""
    size = (round(A4_INCHES[0] * dpi), round(A4_INCHES[1] * dpi))
    return add_noise(Image.new("L", size, 250), noise, seed)


def png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = (
        chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b"")
    )
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def image_pdf(pages: Sequence[Image.Image], path: Path, dpi: int = 300) -> Path:
    """An image-only PDF, as a scanner makes it: one picture per page and no text layer."""
    first, *rest = pages
    first.save(path, "PDF", resolution=dpi, save_all=True, append_images=rest)
    return path


def scanned_pdf(
    path: Path, layouts: Sequence[tuple[Sequence[str], int]], dpi: int = 300
) -> list[str]:
    """An image-only PDF with a page per (paragraphs, columns), each with its own noise seed;
    returns each page's text in reading order."""
    pages = [render_page(p, columns=c, dpi=dpi, seed=n) for n, (p, c) in enumerate(layouts)]
    image_pdf([image for image, _ in pages], path, dpi)
    return [text for _, text in pages]


def text_pdf(pages: Sequence[str], path: Path, font: Path = SANS) -> Path:
    """A PDF with a real text layer (an embedded Unicode font, so accents survive)."""
    pdf = FPDF(format="A4")
    pdf.add_font("body", fname=str(font))
    pdf.set_font("body", size=11)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 6, text)
    pdf.output(str(path))
    return path


def normalise(text: str) -> str:
    """Words separated by single spaces: OCR and the source differ in line breaks only."""
    return re.sub(r"\s+", " ", text).strip()


def similarity(read: str, printed: str) -> float:
    """0..1: how close the text read is to the text printed, character by character."""
    return Levenshtein.normalized_similarity(normalise(read), normalise(printed))


def job_for(source: Path, workdir: Path) -> StepInput:
    """The input the daemon hands a step for `source`, with no earlier artifacts."""
    workdir.mkdir(parents=True, exist_ok=True)
    return StepInput("test", "test", source, source.name, sniff(source), (), workdir, workdir)


def ocr(source: Path, workdir: Path, **params: object) -> StepResult:
    """The ocr step run on `source` as the daemon runs it, with these rule params."""
    return OcrStep().run(job_for(source, workdir), OcrParams.model_validate(params))
