"""The `classify` step: what a photo shows, as the `top` most probable labels of an image
classifier, in `<stem>.labels.json` and in one sentence (`<stem>.labels.txt`) that `index`
makes searchable.

The packaged model is EfficientNet-Lite0 (ImageNet's 1000 classes: "minibus", "tabby cat",
"espresso"...); users give an ultralytics `-cls` model (.pt or .onnx) by path instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field

from caixa import models
from caixa.errors import StepError
from caixa.pipelines.base import BaseStep, Requirements, Resource, StepInput, StepResult
from caixa.pipelines.common import side_by_side
from caixa.pipelines.common.files import json_artifact
from caixa.pipelines.common.images import load_photo
from caixa.pipelines.vision import efficientnet, yolo
from caixa.pipelines.vision.photos import PhotoParams, sentence

if TYPE_CHECKING:
    from PIL import Image


class ClassifyParams(PhotoParams):
    PACKAGED: ClassVar[tuple[str, ...]] = (efficientnet.ARCHITECTURE,)

    model: str = efficientnet.ARCHITECTURE
    top: int = Field(5, ge=1, le=100)  # how many labels to keep, best first


class ClassifyStep(BaseStep):
    name: ClassVar[str] = "classify"
    resource: ClassVar[Resource] = Resource.accelerator
    Params: ClassVar[type[BaseModel]] = ClassifyParams
    requires: ClassVar[Requirements] = Requirements(
        modules=("torch", efficientnet.MODULE, yolo.MODULE), extra="vision"
    )

    @classmethod
    def threads_follow(cls, params: Any) -> bool:
        return True  # torch: a count per call

    @classmethod
    def backend_of(cls, params: Any) -> str | None:
        return "torch"

    @classmethod
    def model_of(cls, params: ClassifyParams) -> str:
        return params.model

    def run(self, job: StepInput, params: ClassifyParams) -> StepResult:
        image = load_photo(job.source, job.media_type, self.name, params.max_pixels)
        weights = models.locate(params.model)
        if params.model == efficientnet.ARCHITECTURE:
            classifier = partial(efficientnet.classify, efficientnet.load(weights, job.device))
        else:
            model = yolo.load(weights, job.device, job.home, ("classify",), side_by_side.slot())
            classifier = partial(yolo.classify, model)
        started = time.perf_counter()
        labels = classifier(
            image, device=job.device, threads=params.threads or job.threads, top=params.top
        )
        return _result(job, params, image, labels, time.perf_counter() - started)

    def run_batch(
        self, jobs: Sequence[StepInput], params: ClassifyParams
    ) -> list[StepResult | Exception]:
        """Photos that wait together: on a CPU side by side, a thread each (EfficientNet-Lite0
        spreads one photo badly over threads: on 2 cores, 1.3x the photos/s of one after
        another on both, the same labels, bench/batching.py), a user's ultralytics model with
        a copy per thread; on a GPU, EfficientNet's photos in one pass, a user's model one
        after another. A photo that fails, fails alone."""
        packaged = params.model == efficientnet.ARCHITECTURE
        if jobs[0].device == "cpu" or not packaged:
            most = None if packaged else yolo.copies(params.model)
            run = partial(self.run, params=params)
            return side_by_side.on_cpu(run, jobs, params.threads, most)
        loaded: list[Image.Image | Exception] = []
        for job in jobs:
            try:
                loaded.append(load_photo(job.source, job.media_type, self.name, params.max_pixels))
            except (OSError, StepError) as exc:
                loaded.append(exc)
        images = [i for i in loaded if not isinstance(i, Exception)]
        net = efficientnet.load(models.locate(params.model), jobs[0].device)
        started = time.perf_counter()
        found = efficientnet.classify_many(
            net, images, device=jobs[0].device, threads=params.threads or jobs[0].threads,
            top=params.top,
        ) if images else []  # fmt: skip
        share = (time.perf_counter() - started) / max(len(images), 1)
        labels = iter(found)
        return [
            image
            if isinstance(image, Exception)
            else _result(job, params, image, next(labels), share)
            for job, image in zip(jobs, loaded, strict=True)
        ]


def _result(
    job: StepInput,
    params: ClassifyParams,
    image: Image.Image,
    labels: list[tuple[str, float]],
    seconds: float,
) -> StepResult:
    found = [{"label": label, "probability": round(p, 4)} for label, p in labels]
    report = {
        "image": job.source_name,
        "width": image.width,
        "height": image.height,
        "model": params.model_name,
        "labels": found,
    }
    looks = ", ".join(f"{label} ({p:.0%})" for label, p in labels)
    words = f"{job.source_name} looks like: {looks} (by {params.model_name})."
    return StepResult(
        [
            json_artifact(job, "labels", report),
            sentence(job, "labels", words),
        ],
        data={
            "labels": found,
            "model": params.model_name,
            "width": image.width,
            "height": image.height,
            "seconds": round(seconds, 3),
        },
        models=[params.model_name],
    )
