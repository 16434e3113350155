"""Photo throughput: images/s of the detect and classify steps' run() (the photo decoded and
checked, EXIF orientation applied, the model run, every output file written) against, in the
same run, the raw libraries on the same photos:

  detect:   a plain `YOLO(path).predict(photo_path)` loop (ultralytics reads the file itself);
  classify: a plain EfficientNet-Lite0 loop (PIL open, torchvision resize 256 / centre crop
            224 / scale, forward, softmax, top 5).

Both sides run on the same torch threads: the steps' default, the CPUs this process may use
(caixa/pipelines/threads.py). Each image goes through both contenders in turn (the order
rotating), so that they meet the same moments of a shared machine; a contender's round is the
sum over its images, and its best of ROUNDS rounds counts. CPU seconds per image (all threads)
are reported too: on a busy machine they are steadier than wall time. What each side saw is
printed side by side (people per photo, top-1 labels).

Targets: detect step >= 0.9x the plain predict loop; classify step >= 0.9x the plain forward.
"""

from __future__ import annotations

import importlib.util
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import plain_efficientnet, ratio, save

from caixa import models
from caixa.filetypes import sniff
from caixa.pipelines.base import StepInput
from caixa.pipelines.common.threads import use_torch_threads
from caixa.pipelines.vision import efficientnet, yolo
from caixa.pipelines.vision.classify import ClassifyParams, ClassifyStep
from caixa.pipelines.vision.detect import DetectParams, DetectStep

ROUNDS = 5
REPEATS = 4  # each photo, per round
TARGET = 0.9
CPUS = len(os.sched_getaffinity(0))


def package_folder(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, name
    return Path(next(iter(spec.submodule_search_locations)))


PHOTOS = [
    package_folder("ultralytics") / "assets" / "bus.jpg",
    package_folder("ultralytics") / "assets" / "zidane.jpg",
    package_folder("matplotlib") / "mpl-data" / "sample_data" / "grace_hopper.jpg",
]


IMAGES = PHOTOS * REPEATS
Contender = Callable[[int, int], Any]  # (round, image index) -> what it saw


def cpu_seconds() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def jobs(root: Path, home: Path, tag: str) -> list[StepInput]:
    """One input per photo and repeat, each with its own empty workdir (made before timing)."""
    made = []
    for i, photo in enumerate(IMAGES):
        workdir = root / f"{tag}-{i}"
        workdir.mkdir(parents=True)
        made.append(
            StepInput("bench", "photos", photo, photo.name, sniff(photo), (), workdir, home)
        )
    return made


def plain_detector(home: Path) -> Contender:
    """`YOLO(path).predict(file)`; ultralytics imported with caixa's switches on (nothing may
    reach the network, in a bench either)."""
    model = yolo.library(home).YOLO(str(models.locate("fall-detection")))
    model.predict(str(PHOTOS[0]), device="cpu", verbose=False)  # its set-up, before timing

    def run(_round: int, i: int) -> int:
        (result,) = model.predict(str(IMAGES[i]), device="cpu", verbose=False)
        return len(result.boxes)

    return run


def plain_classifier() -> Contender:
    import torch
    from PIL import Image

    net, prepare = plain_efficientnet()
    names = efficientnet.imagenet_names()

    def run(_round: int, i: int) -> str:
        with Image.open(IMAGES[i]) as img:
            batch = prepare(img.convert("RGB")).unsqueeze(0)
        with torch.inference_mode():
            top = net(batch).softmax(-1)[0].topk(5)
        return names[int(top.indices[0])]

    return run


def timed(contenders: dict[str, Contender]) -> tuple[dict, dict, dict]:
    """Each image of a round goes through every contender in turn (the order rotating), so
    that all meet the same moments of a shared machine; a contender's round is the sum over
    its images, and its best round counts. Also: CPU seconds, and what each saw in round 0."""
    names = list(contenders)
    best = dict.fromkeys(names, float("inf"))
    cpu = dict.fromkeys(names, float("inf"))
    seen: dict[str, list[Any]] = {name: [] for name in names}
    for r in range(ROUNDS):
        wall, used = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
        for i in range(len(IMAGES)):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                start, start_cpu = time.perf_counter(), cpu_seconds()
                saw = contenders[name](r, i)
                wall[name] += time.perf_counter() - start
                used[name] += cpu_seconds() - start_cpu
                if r == 0:
                    seen[name].append(saw)
        for name in names:
            best[name], cpu[name] = min(best[name], wall[name]), min(cpu[name], used[name])
    return best, cpu, seen


def main() -> None:
    count = len(IMAGES)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="caixa-bench-detect-") as tmp:
        root = Path(tmp)
        home = root / "home"
        home.mkdir()
        detect, detect_params = DetectStep(), DetectParams()
        classify, classify_params = ClassifyStep(), ClassifyParams()
        inputs = {
            (kind, r): jobs(root, home, f"{kind}-{r}")
            for kind in ("detect", "classify")
            for r in range(-1, ROUNDS)
        }
        # the models load before timing, as in a warm worker (round -1 is that warm-up)
        detect.run(inputs["detect", -1][0], detect_params)
        classify.run(inputs["classify", -1][0], classify_params)
        threads = use_torch_threads(None)  # the plain loops run on the steps' threads
        plain_detect, plain_classify = plain_detector(home), plain_classifier()
        best_d, cpu_d, seen_d = timed(
            {
                "step": lambda r, i: detect.run(inputs["detect", r][i], detect_params).data,
                "plain": plain_detect,
            }
        )
        best_c, cpu_c, seen_c = timed(
            {
                "step": lambda r, i: classify.run(inputs["classify", r][i], classify_params).data,
                "plain": plain_classify,
            }
        )
    rate_d = {name: count / s for name, s in best_d.items()}
    rate_c = {name: count / s for name, s in best_c.items()}
    vs_d, vs_c = ratio(rate_d["step"], rate_d["plain"]), ratio(rate_c["step"], rate_c["plain"])
    people_step = [d["detections"] for d in seen_d["step"][: len(PHOTOS)]]
    people_plain = seen_d["plain"][: len(PHOTOS)]
    top1_step = [c["labels"][0]["label"] for c in seen_c["step"][: len(PHOTOS)]]
    figures = {
        "photos": [p.name for p in PHOTOS],
        "images_per_round": count,
        "rounds": ROUNDS,
        "cpus": CPUS,
        "torch_threads": threads,
        "load_average_at_start": round(load, 2),
        "detect_images_per_s": {k: round(v, 2) for k, v in rate_d.items()},
        "detect_cpu_s_per_image": {k: round(v / count, 3) for k, v in cpu_d.items()},
        "detect_people": {"step": people_step, "plain": people_plain},
        "detect_ratio": vs_d,
        "detect_cpu_ratio": ratio(cpu_d["plain"], cpu_d["step"]),
        "classify_images_per_s": {k: round(v, 2) for k, v in rate_c.items()},
        "classify_cpu_s_per_image": {k: round(v / count, 3) for k, v in cpu_c.items()},
        "classify_top1": {"step": top1_step, "plain": seen_c["plain"][: len(PHOTOS)]},
        "classify_ratio": vs_c,
        "classify_cpu_ratio": ratio(cpu_c["plain"], cpu_c["step"]),
        "target_met": {
            "detect": rate_d["step"] / rate_d["plain"] >= TARGET,
            "classify": rate_c["step"] / rate_c["plain"] >= TARGET,
        },
    }
    print(
        f"photos: {', '.join(p.name for p in PHOTOS)} x {REPEATS} per round, best of {ROUNDS} "
        f"rounds, {CPUS} CPUs, torch threads {threads} (load average {load:.2f} at start)"
    )
    print(
        f"  detect step (fall-detection, JSON + annotated JPEG + text): {rate_d['step']:.2f} "
        f"images/s, {cpu_d['step'] / count:.3f} CPU s/image, people {people_step}"
    )
    print(
        f"  plain YOLO.predict loop: {rate_d['plain']:.2f} images/s, "
        f"{cpu_d['plain'] / count:.3f} CPU s/image, people {people_plain}: ratio step/plain "
        f"{vs_d}x (target >= {TARGET}x; by CPU time {ratio(cpu_d['plain'], cpu_d['step'])}x)"
    )
    print(
        f"  classify step (efficientnet-lite0, JSON + text): {rate_c['step']:.2f} images/s, "
        f"{cpu_c['step'] / count:.3f} CPU s/image, top-1 {top1_step}"
    )
    print(
        f"  plain EfficientNet-Lite0 loop: {rate_c['plain']:.2f} images/s, "
        f"{cpu_c['plain'] / count:.3f} CPU s/image, top-1 {seen_c['plain'][: len(PHOTOS)]}: "
        f"ratio step/plain {vs_c}x (target >= {TARGET}x; by CPU time "
        f"{ratio(cpu_c['plain'], cpu_c['step'])}x)"
    )
    met = figures["target_met"]
    print(
        f"  targets: detect {'MET' if met['detect'] else 'NOT MET'}, "
        f"classify {'MET' if met['classify'] else 'NOT MET'}"
    )
    save("detect", figures)


if __name__ == "__main__":
    main()
