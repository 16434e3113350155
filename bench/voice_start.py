"""A Piper voice's start: a fresh process opening the packaged voice's ONNX session, which
every worker that speaks pays once (and again after its keep-alive ends).

Timed in a new Python process, onnxruntime already imported, from just before the session is
made to its first sentence spoken: onnxruntime opening the voice's own file (what Piper's
loader does) against caixa's `onnx.session` with a home that keeps the voice's optimised graph
(made by the first run, not timed). Both on every core, both speak the same sentence with
Piper's noise off, and the samples are compared.

Ratio: onnxruntime's seconds over caixa's, median of RUNS alternating runs (higher is better).

    python bench/voice_start.py
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from _common import in_new_process, ratio, save

RUNS = 7
VOICE = "en_US-joe-medium"
FIRST_SENTENCE = """
import hashlib, json, os, sys, time
from pathlib import Path
import numpy as np
import onnxruntime as ort
from caixa import models
from caixa.pipelines.common import onnx
voice = models.locate(sys.argv[2])
options = ort.SessionOptions()
options.intra_op_num_threads = len(os.sched_getaffinity(0))
ids = np.array([[1, 0, 41, 0, 120, 0, 61, 0, 3, 0, 33, 0, 14, 0, 59, 0, 74, 0, 2]])
start = time.perf_counter()
if sys.argv[1]:
    session = onnx.session(voice, options, [onnx.CPU], Path(sys.argv[1]))
else:
    session = ort.InferenceSession(str(voice), options, providers=[onnx.CPU])
scales = np.array([0.0, 1.0, 0.0], dtype=np.float32)
audio = session.run(None, {"input": ids, "input_lengths": np.array([ids.shape[1]]), "scales": scales})[0]
seconds = time.perf_counter() - start
print(json.dumps([seconds, hashlib.sha256(audio.tobytes()).hexdigest()]))
"""


def first_sentence(home: Path | None) -> tuple[float, str]:
    seconds, samples = in_new_process(FIRST_SENTENCE, str(home or ""), VOICE)
    return seconds, samples


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="caixa-bench-voice-") as tmp:
        home = Path(tmp)
        first_sentence(home)  # the home's copy made once, as a home's first tts step makes it
        plain, ours = [], []
        for _ in range(RUNS):
            seconds, plain_samples = first_sentence(None)
            plain.append(seconds)
            seconds, our_samples = first_sentence(home)
            ours.append(seconds)
    plain_s, ours_s = statistics.median(plain), statistics.median(ours)
    figures = {
        "runs": RUNS,
        "onnxruntime_first_sentence_s": round(plain_s, 3),
        "caixa_first_sentence_s": round(ours_s, 3),
        "ratio": ratio(plain_s, ours_s),
        "same_samples": plain_samples == our_samples,
    }
    print(
        f"Piper voice {VOICE}, session made and first sentence spoken in a new process (median "
        f"of {RUNS}): onnxruntime on the voice's file {plain_s:.3f} s, caixa with a home "
        f"{ours_s:.3f} s: {figures['ratio']}x; same samples: {figures['same_samples']}"
    )
    save("voice_start", figures)


if __name__ == "__main__":
    main()
