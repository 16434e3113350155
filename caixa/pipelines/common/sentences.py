"""Paragraphs and sentences of Portuguese and English text, for translation and chunking.

A small rule-based splitter: it keeps abbreviations (Sr., Dra., e.g., p. ex.), decimals and
initials together, which is what these two languages need; translation and indexing both split
with it, so a chunk never starts mid-sentence and a translation keeps its paragraphs.
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset(
    """
    sr sra srs sras dr dra drs dras prof profa eng arq av r pág pag p pp cap art inc ltda cia
    etc ex exa vs nº no núm num tel fig fls vol ed obs aprox
    mr mrs ms mx jr st mt e.g i.e a.m p.m approx dept est
    jan fev feb mar abr apr mai may jun jul ago aug set sep out oct nov dez dec
    """.split()
)
_PARAGRAPH = re.compile(r"\n[ \t]*\n+|\f")
_SENTENCE_END = re.compile(r"([.!?…]+[\"'”’»)\]]*)(\s+)(?=[\"'“‘«(\[]?[A-ZÀ-ÖØ-Þ0-9¿¡])")


def paragraphs(text: str) -> list[str]:
    """Blocks separated by a blank line or a page break, with inner line breaks joined."""
    blocks = (" ".join(line.strip() for line in b.splitlines()) for b in _PARAGRAPH.split(text))
    return [re.sub(r"\s+", " ", b).strip() for b in blocks if b.strip()]


def sentences(paragraph: str) -> list[str]:
    """The sentences of one paragraph."""
    out: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(paragraph):
        end = match.end(1)
        words = paragraph[start:end].split()
        last = words[-1].rstrip(".!?…\"'”’»)]").lower() if words else ""
        if match.group(1) == "." and (last in ABBREVIATIONS or len(last) == 1):
            continue  # "Sr. Silva", "J. R. R. Tolkien"
        out.append(paragraph[start:end].strip())
        start = match.end()
    tail = paragraph[start:].strip()
    if tail:
        out.append(tail)
    return out


def pieces(paragraph: str, max_words: int) -> list[str]:
    """The sentences of a paragraph, each cut to at most `max_words` words (after a comma,
    semicolon or colon once past half of that, else at the limit): translation and speech
    models slow down, and grow in memory, on run-on OCR lines."""
    out = []
    for sentence in sentences(paragraph):
        piece: list[str] = []
        for word in sentence.split():
            piece.append(word)
            if len(piece) >= max_words or (len(piece) >= max_words // 2 and word[-1] in ",;:"):
                out.append(" ".join(piece))
                piece = []
        if piece:
            out.append(" ".join(piece))
    return out
