"""Image generation: seconds per image of the imagegen step (a prompt file with front matter
read and checked, settings merged, the pipeline taken from caixa's model cache, a fresh
scheduler swapped in and back, the PNG written with its metadata) against a plain diffusers
pipeline call with the same prompt, size, steps, guidance and seed, in the same run.

No real diffusion model installs offline, so both run the random-weight pipelines that
tests/tiny_diffusion.py builds: `tiny` (64x64 px, 20 steps, the one the tests use; its images
are mostly fixed per-call costs: text encoding, the VAE, the PNG) and `bench` (a larger random
UNet at 128x128 px, whose steps dominate as a real model's do). The two contenders make the
same images from the same seeds, one image each in turn, taking turns to go first, so both meet
the same moments of a shared machine's load; the median counts. Both must make the same pixels.
CPU seconds are shown too: they hardly depend on what else runs. torch runs on THREADS thread(s)
for both: on a busy 2-core machine two threads thrash (one 10-step 128 px image took 15-74 s on
two threads and 1.4-2.3 s on one, measured here while other work ran).

Target: step >= 0.95x the plain call (as images per second).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from _common import ratio, save
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (argos ships a `tests`)
from caixa.pipelines.base import StepInput
from caixa.pipelines.imagegen.step import ImagegenParams, ImagegenStep
from tests import tiny_diffusion

TARGET = 0.95
THREADS = 1
PROMPT = "A lighthouse on a rocky coast at dusk, watercolour"
# name: (pixels a side, sampling steps, images per contender)
CASES = {"tiny": (64, 20, 30), "bench": (128, 10, 8)}


@dataclass
class Timed:
    """One image: wall and CPU seconds (torch runs on this thread alone), and its pixels."""

    wall: float
    cpu: float
    pixels: bytes
    own: float = 0.0  # the step's own work: its wall time outside the pipeline call


@contextmanager
def timer() -> Iterator[list[float]]:
    wall, cpu = time.perf_counter(), time.thread_time()
    spent: list[float] = []
    yield spent
    spent += [time.perf_counter() - wall, time.thread_time() - cpu]


def step_image(root: Path, params: ImagegenParams, seed: int) -> Timed:
    work = root / f"{params.model.name}-step-{seed}"
    work.mkdir()
    source = work / "lighthouse.prompt"
    source.write_text(f"---\nseed: {seed}\n---\n{PROMPT}\n", encoding="utf-8")
    job = StepInput("bench", "bench", source, source.name, "text/plain", (), work, root)
    with timer() as spent:
        result = ImagegenStep().run(job, params)
    with Image.open(result.artifacts[0].path) as image:
        pixels = image.tobytes()
    return Timed(*spent, pixels, spent[0] - result.data["seconds_per_image"])


def plain_image(pipe: Any, params: ImagegenParams, seed: int) -> Timed:
    import torch

    with timer() as spent:
        image = pipe(
            PROMPT,
            num_inference_steps=params.steps,
            guidance_scale=params.guidance,
            width=params.width,
            height=params.height,
            generator=torch.Generator("cpu").manual_seed(seed),
        ).images[0]
    return Timed(*spent, image.tobytes())


def measure(root: Path, case: str, size: int, steps: int, images: int) -> dict[str, Any]:
    import torch
    from diffusers import StableDiffusionPipeline

    model = tiny_diffusion.build(root / f"{case}-sd", case)
    params = ImagegenParams(model=model, steps=steps, width=size, height=size)
    pipe = StableDiffusionPipeline.from_pretrained(
        model, local_files_only=True, dtype=torch.float32
    )
    pipe.set_progress_bar_config(disable=True)  # as the step has it: a terminal's bar costs time
    # both load and warm up outside the timed part: a daemon keeps its models loaded
    step_image(root, params, 0)
    plain_image(pipe, params, 0)
    step, plain = [], []
    for seed in range(1, images + 1):  # image by image, each going first in turn
        if seed % 2:
            step.append(step_image(root, params, seed))
            plain.append(plain_image(pipe, params, seed))
        else:
            plain.append(plain_image(pipe, params, seed))
            step.append(step_image(root, params, seed))
        assert step[-1].pixels == plain[-1].pixels, f"{case}: the step drew other pixels"
    wall = {"step": median(t.wall for t in step), "plain": median(t.wall for t in plain)}
    cpu = {"step": median(t.cpu for t in step), "plain": median(t.cpu for t in plain)}
    speed = ratio(wall["plain"], wall["step"])  # images/s of the step over the plain call's
    weights = sum(
        p.numel() for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters()
    )
    return {
        "size": f"{size}x{size}",
        "steps": steps,
        "images": images,
        "parameters": weights,
        "median_s_per_image": {name: round(s, 4) for name, s in wall.items()},
        "median_cpu_s_per_image": {name: round(s, 4) for name, s in cpu.items()},
        "step_own_work_ms": round(1000 * median(t.own for t in step), 1),
        "ratio_to_plain": speed,
        "cpu_ratio_to_plain": ratio(cpu["plain"], cpu["step"]),
        "target_met": speed is not None and speed >= TARGET,
    }


def main() -> None:
    import torch

    torch.set_num_threads(THREADS)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="caixa-bench-imagegen-") as tmp:
        figures: dict[str, Any] = {"threads": THREADS, "load_average_at_start": round(load, 2)}
        figures |= {case: measure(Path(tmp), case, *spec) for case, spec in CASES.items()}
    print(
        f"imagegen: median s/image over images made in turn by each contender, torch on "
        f"{THREADS} thread(s), random-weight pipelines (load average {load:.2f})"
    )
    for case in CASES:
        f = figures[case]
        wall, cpu = f["median_s_per_image"], f["median_cpu_s_per_image"]
        print(
            f"  {case} ({f['parameters'] / 1e6:.1f} M weights, {f['size']}, {f['steps']} steps, "
            f"{f['images']} images): step {wall['step']:.3f} s, plain pipeline call "
            f"{wall['plain']:.3f} s: ratio step/plain {f['ratio_to_plain']}x (target >= "
            f"{TARGET}x) {'MET' if f['target_met'] else 'NOT MET'}; CPU s {cpu['step']:.3f} vs "
            f"{cpu['plain']:.3f}: {f['cpu_ratio_to_plain']}x; the step's own work "
            f"{f['step_own_work_ms']} ms per image"
        )
    save("imagegen", figures)


if __name__ == "__main__":
    main()
