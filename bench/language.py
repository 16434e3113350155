"""The language detector's start: a fresh process's first answer, which every worker that
detects (tts, translate, index) and every `caixa search` pays once.

Timed in a new Python process from just before the first `detect` to its answer, numpy
already imported (every step that detects has it): py3langid's own loader
(`LanguageIdentifier.from_model_file`, its LZMA-packed model, as caixa loads it with no home)
against caixa's `detect` with a home whose `models/` keeps the model unpacked (made by the
first run, not timed). Both give the same answers (tests/unit/test_language.py).

Ratio: py3langid's seconds over caixa's, median of RUNS alternating runs (higher is better).

    python bench/language.py
"""

from __future__ import annotations

from _common import first_runs

RUNS = 7
TEXT = "Segunda via do boleto da conta de luz"
FIRST_ANSWER = """
import json, sys, time
from pathlib import Path
import numpy
if sys.argv[1]:
    from caixa.pipelines.common.language import detect
    start = time.perf_counter()
    found = detect(sys.argv[2], home=Path(sys.argv[1])).language
else:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier
    start = time.perf_counter()
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    found = identifier.rank(sys.argv[2])[0][0]
print(json.dumps([time.perf_counter() - start, found]))
"""


def main() -> None:
    first_runs(
        "language",
        FIRST_ANSWER,
        [TEXT],
        RUNS,
        lambda f: (
            f"language detector, first answer in a new process (median of {RUNS}): py3langid's"
            f" loader {f['plain_s']:.3f} s, caixa with a home {f['caixa_s']:.3f} s:"
            f" {f['ratio']}x; same answer: {f['same']} ({f['found']})"
        ),
    )


if __name__ == "__main__":
    main()
