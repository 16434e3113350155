"""Cells of the vector index (an inverted file, IVF): spherical k-means centroids split the
vectors, and a query scans only the cells nearest to it.

Why: the prebuilt sqlite-vec (0.1.9) has exact scans only, without SIMD; over 100,000 384-dim
vectors one takes ~60 ms on this kind of CPU, more than the whole search may. Its binary
quantization is fast (~7 ms) but ranks e5 vectors badly (recall@10 0.33 with 48 candidates
out of only 1,500: e5 vectors share a large common direction, so their sign bits say little).
Scanning the few nearest cells (vec0 partitions) keeps exact distances for what is scanned.
Below TRAIN_AT vectors everything is one cell and the scan is exact.
"""

from __future__ import annotations

import math

import numpy as np

TRAIN_AT = 4096  # vectors; below this one exact scan is quick enough
CELL_SIZE = 1024  # vectors per cell on average when trained
PROBE_FRACTION = 0.08  # of the cells a query scans (bench/search.py: recall against exact)
MIN_PROBES = 4
SAMPLE = 32_768  # vectors the centroids are trained on
ROUNDS = 10


def cell_count(vectors: int) -> int:
    return max(2, vectors // CELL_SIZE)


def probe_count(cells: int) -> int:
    return min(cells, max(MIN_PROBES, math.ceil(cells * PROBE_FRACTION)))


def train(vectors: np.ndarray, cells: int, seed: int = 0) -> np.ndarray:
    """Unit centroids by spherical k-means (cosine), the same for the same vectors."""
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(len(vectors), min(SAMPLE, len(vectors)), replace=False)]
    centroids = sample[rng.choice(len(sample), cells, replace=False)]
    for _ in range(ROUNDS):
        nearest = assign(sample, centroids)
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest, sample)
        empty = np.flatnonzero(np.bincount(nearest, minlength=cells) == 0)
        sums[empty] = sample[rng.choice(len(sample), len(empty), replace=False)]
        centroids = sums / np.linalg.norm(sums, axis=1, keepdims=True)
    return centroids.astype(np.float32)


def assign(vectors: np.ndarray, centroids: np.ndarray | None) -> np.ndarray:
    """The cell of each vector (all in cell 0 before training)."""
    if centroids is None or not len(vectors):
        return np.zeros(len(vectors), dtype=np.int64)
    parts = np.array_split(vectors, math.ceil(len(vectors) / 8192))  # bounded memory
    return np.concatenate([np.argmax(part @ centroids.T, axis=1) for part in parts])


def probes(query: np.ndarray, centroids: np.ndarray | None) -> list[int]:
    """The cells a query scans, nearest first."""
    if centroids is None:
        return [0]
    return [int(c) for c in np.argsort(-(centroids @ query))[: probe_count(len(centroids))]]
