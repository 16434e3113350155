"""Does a batch help the models on this machine's CPU? Why `detect`, `classify`, `transcribe`
and `tts` run a batch's jobs side by side on a CPU, a thread each, rather than in one pass.

Through caixa's step with every core (the lane's budget when no CPU step runs): `run` for each
input (the model on every thread, its library's own way) against `run_batch` (side by side, a
thread each; detect with a copy of the model per thread):

  detect:     the packaged fall-detection YOLOv8s on 8 photos of two sizes (bus 810x1080,
              zidane 1280x720), best of 3 rounds;
  classify:   EfficientNet-Lite0 on the same 8 photos, best of 3 rounds;
  transcribe: SPOKEN voice memos (spoken by Piper, as bench/pipelines.py makes them), Whisper
              base, best of 2 rounds;
  tts:        SPOKEN texts (as bench/pipelines.py makes them), Piper's voice and an OGG copy
              each, best of 2 rounds.

And the libraries alone, one pass of eight photos against eight passes of one, best of ROUNDS
(why a CPU's batch is not one pass): ultralytics' `predict` on photos of two sizes and of one
size (`detect_one_pass_*`), EfficientNet-Lite0 on eight prepared inputs (`classify_one_pass`).

Printed: inputs/s one by one and batched, the ratio (batched / one by one), and whether both
found the same (objects per label, top-1 labels, transcripts, seconds of speech). Issue 15 asks
>= 1.3x where batching is used.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _common import ratio, save
from PIL import Image
from pipelines import make_speak, make_voice

from caixa import models, offline
from caixa.pipelines.base import StepInput, StepResult
from caixa.pipelines.speech.step import TtsParams, TtsStep
from caixa.pipelines.transcribe.step import TranscribeParams, TranscribeStep
from caixa.pipelines.vision import efficientnet, yolo
from caixa.pipelines.vision.classify import ClassifyParams, ClassifyStep
from caixa.pipelines.vision.detect import DetectParams, DetectStep

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (argos ships a `tests`)
from tests.documents import job_for

ROUNDS = 5
SPOKEN = 4  # memos to transcribe, texts to speak


def compare(
    one: Callable[[], Any], many: Callable[[], Any], count: int, rounds: int = ROUNDS
) -> dict[str, Any]:
    """`one` (a call per input) and `many` (one call for all), alternating `rounds` times so
    that both meet the same moments of a shared machine; each side's best round counts."""
    seconds: dict[str, list[float]] = {"one": [], "many": []}
    found: dict[str, Any] = {}
    for _ in range(rounds):
        for side, run in (("one", one), ("many", many)):
            start = time.perf_counter()
            found[side] = run()
            seconds[side].append(time.perf_counter() - start)
    alone, together = min(seconds["one"]), min(seconds["many"])
    return {
        "one_by_one_per_s": round(count / alone, 2),
        "batched_per_s": round(count / together, 2),
        "ratio": ratio(alone, together),
        "same": found["one"] == found["many"],
    }


def detect(model: Any, photos: list[Image.Image]) -> dict[str, Any]:
    def one() -> list[int]:
        return [len(model.predict(p, device="cpu", verbose=False)[0].boxes) for p in photos]

    def many() -> list[int]:
        return [len(r.boxes) for r in model.predict(photos, device="cpu", verbose=False)]

    return compare(one, many, len(photos))


def classify(net: Any, photos: list[Image.Image]) -> dict[str, Any]:
    import torch

    inputs = torch.from_numpy(np.stack([efficientnet.pixels(p) for p in photos]))

    def one() -> list[int]:
        with torch.inference_mode():
            return [int(net(inputs[i : i + 1]).argmax()) for i in range(len(photos))]

    def many() -> list[int]:
        with torch.inference_mode():
            return net(inputs).argmax(-1).tolist()

    return compare(one, many, len(photos))


def side_by_side(
    step: Any, params: Any, home: Path, inputs: list[Path], rounds: int = 2
) -> dict[str, Any]:
    """caixa's step on every core: `run` for each input (the model on every thread, as its
    library's own default) against `run_batch` (side by side, a thread each). What each made:
    objects per label, the top label, transcripts, or the seconds of speech."""
    cores = len(os.sched_getaffinity(0))

    def jobs(side: str) -> list[StepInput]:
        made = [
            job_for(m, home / f"{side}-{time.monotonic_ns()}-{i}") for i, m in enumerate(inputs)
        ]
        return [replace(j, home=home, threads=cores) for j in made]

    def made(result: StepResult | Exception) -> str | int:
        assert isinstance(result, StepResult), result
        if "duration_seconds" in result.data:  # speech: Piper's noise moves it a little
            return round(result.data["duration_seconds"])
        if "counts" in result.data:  # detect: objects per label
            return str(sorted(result.data["counts"].items()))
        if "labels" in result.data:  # classify: the top label
            return result.data["labels"][0]["label"]
        return next(a.path for a in result.artifacts if a.name.endswith(".txt")).read_text()

    def one() -> list[str | int]:
        return [made(step.run(j, params)) for j in jobs("one")]

    def many() -> list[str | int]:
        return [made(r) for r in step.run_batch(jobs("many"), params)]

    one()  # each model loaded once, as a worker keeps it
    many()
    return compare(one, many, len(inputs), rounds=rounds)


def main() -> None:
    offline.enforce()
    from tests.photos import BUS, ZIDANE

    home = Path(tempfile.mkdtemp(prefix="caixa-bench-batching-"))
    detector = yolo.load(models.locate("fall-detection"), "cpu", home, yolo.BOX_TASKS)
    net = efficientnet.load(models.locate("efficientnet-lite0"), "cpu")
    bus, zidane = (Image.open(p).convert("RGB") for p in (BUS, ZIDANE))
    detector.predict(bus, device="cpu", verbose=False)  # torch's first call sets it up
    figures = {
        "detect": side_by_side(DetectStep(), DetectParams(), home, [BUS, ZIDANE] * 4, 3),
        "classify": side_by_side(ClassifyStep(), ClassifyParams(), home, [BUS, ZIDANE] * 4, 3),
        "detect_one_pass_two_sizes": detect(detector, [bus, zidane] * 4),
        "detect_one_pass_one_size": detect(detector, [bus] * 8),
        "classify_one_pass": classify(net, [bus, zidane] * 4),
    }
    for folder, make in (("memos", make_voice), ("texts", make_speak)):
        (home / folder).mkdir()
        make(home / folder, SPOKEN)
    memos, texts = (sorted((home / f).iterdir()) for f in ("memos", "texts"))
    figures["transcribe"] = side_by_side(TranscribeStep(), TranscribeParams(), home, memos)
    figures["tts"] = side_by_side(TtsStep(), TtsParams(compress="ogg"), home, texts)
    print(
        f"batching: 8 photos on the CPU (one pass: best of {ROUNDS}); {SPOKEN} voice memos and"
        f" {SPOKEN} texts to speak, best of 2"
    )
    for name, f in figures.items():
        print(
            f"  {name:26} one by one {f['one_by_one_per_s']:6.2f}/s, batched"
            f" {f['batched_per_s']:6.2f}/s: {f['ratio']}x; same results: {f['same']}"
        )
    save("batching", figures)


if __name__ == "__main__":
    main()
