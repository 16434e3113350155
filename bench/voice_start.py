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

from _common import first_runs

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


def main() -> None:
    first_runs(
        "voice_start",
        FIRST_SENTENCE,
        [VOICE],
        RUNS,
        lambda f: (
            f"Piper voice {VOICE}, session made and first sentence spoken in a new process"
            f" (median of {RUNS}): onnxruntime on the voice's file {f['plain_s']:.3f} s, caixa"
            f" with a home {f['caixa_s']:.3f} s: {f['ratio']}x; same samples: {f['same']}"
        ),
    )


if __name__ == "__main__":
    main()
