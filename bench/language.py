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

import statistics
import tempfile
from pathlib import Path

from _common import in_new_process, ratio, save

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


def first_answer(home: Path | None) -> tuple[float, str]:
    seconds, found = in_new_process(FIRST_ANSWER, str(home or ""), TEXT)
    return seconds, found


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="caixa-bench-language-") as tmp:
        home = Path(tmp)
        first_answer(home)  # the home's copy made once, as a home's first step makes it
        plain, ours = [], []
        for _ in range(RUNS):
            seconds, plain_found = first_answer(None)
            plain.append(seconds)
            seconds, our_found = first_answer(home)
            ours.append(seconds)
    plain_s, ours_s = statistics.median(plain), statistics.median(ours)
    figures = {
        "runs": RUNS,
        "py3langid_first_answer_s": round(plain_s, 3),
        "caixa_first_answer_s": round(ours_s, 3),
        "ratio": ratio(plain_s, ours_s),
        "same_answer": plain_found == our_found,
    }
    print(
        f"language detector, first answer in a new process (median of {RUNS}): py3langid's "
        f"loader {plain_s:.3f} s, caixa with a home {ours_s:.3f} s: {figures['ratio']}x; "
        f"same answer: {figures['same_answer']} ({our_found})"
    )
    save("language", figures)


if __name__ == "__main__":
    main()
