"""The `detect` step: objects found in a photo by a YOLO model, as `<stem>.detections.json`
(label, confidence, box in pixels of the photo as a viewer shows it, EXIF orientation applied),
`<stem>.annotated.jpg` (the photo with its boxes drawn) and `<stem>.detections.txt` (one
sentence of what was found, which `index` makes searchable).

The packaged model is `fall-detection` (a YOLOv8s whose classes, Normal and Fall, are people);
users give their own ultralytics weights (a COCO yolo11n.pt, any .pt or .onnx) by path.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, Field, field_validator

from caixa import models
from caixa.errors import StepError
from caixa.pipelines.base import Artifact, BaseStep, Requirements, Resource, StepInput, StepResult
from caixa.pipelines.common import side_by_side
from caixa.pipelines.common.files import json_artifact
from caixa.pipelines.common.images import load_photo
from caixa.pipelines.vision import yolo
from caixa.pipelines.vision.photos import PhotoParams, sentence

MAX_NAMES_SHOWN = 30  # of a model's classes, in an error message
# What a packaged detector's own labels mean, said in the words a search for them would use:
# fall-detection calls every person it finds "Normal" or "Fall".
MEANINGS = {"fall-detection": {"Normal": "person", "Fall": "person who has fallen"}}


class DetectParams(PhotoParams):
    PACKAGED: ClassVar[tuple[str, ...]] = ("fall-detection",)

    model: str = "fall-detection"
    confidence: float = Field(0.25, ge=0, le=1)  # boxes less sure than this are dropped
    iou: float = Field(0.7, gt=0, le=1)  # boxes overlapping more than this are merged (NMS)
    classes: list[str] | None = Field(None, min_length=1)  # only these of the model's labels
    imgsz: int = Field(640, ge=32, le=4096, multiple_of=32)  # the size the model sees
    max_det: int = Field(300, ge=1, le=10_000)

    @field_validator("classes", mode="before")
    @classmethod
    def _one_or_more(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value  # `classes: person` is one


class DetectStep(BaseStep):
    name: ClassVar[str] = "detect"
    resource: ClassVar[Resource] = Resource.accelerator
    Params: ClassVar[type[BaseModel]] = DetectParams
    requires: ClassVar[Requirements] = Requirements(
        modules=("torch", yolo.MODULE, "cv2"), extra="vision"
    )

    @classmethod
    def threads_follow(cls, params: Any) -> bool:
        return True  # torch: a count per call

    @classmethod
    def backend_of(cls, params: Any) -> str | None:
        return "torch"

    @classmethod
    def model_of(cls, params: DetectParams) -> str:
        return params.model

    @classmethod
    def lighter(cls, params: DetectParams) -> DetectParams | None:
        """Half the input size: activations shrink with its square (boxes stay in the photo's
        own pixels, a little less sure on small objects)."""
        smaller = max(320, params.imgsz // 2 // 32 * 32)
        return params.model_copy(update={"imgsz": smaller}) if smaller < params.imgsz else None

    def run_batch(
        self, jobs: Sequence[StepInput], params: DetectParams
    ) -> list[StepResult | Exception]:
        """Photos that wait together, looked at side by side on a CPU: a thread each, each
        thread with its own copy of the model (ultralytics' predictor takes one call at a
        time). On 2 cores, side by side found 1.1-1.2x the photos/s of one after another on
        both, the same boxes (bench/batching.py: torch spreads YOLOv8s well over two threads;
        the photo's decoding and drawing do not spread). On a GPU, or with the rule's own
        `threads`, one after another. A photo that fails, fails alone."""
        return side_by_side.on_cpu(
            lambda job: self.run(job, params), jobs, params.threads, yolo.copies(params.model)
        )

    def run(self, job: StepInput, params: DetectParams) -> StepResult:
        image = load_photo(job.source, job.media_type, self.name, params.max_pixels)
        weights = models.locate(params.model)
        model = yolo.load(weights, job.device, job.home, yolo.BOX_TASKS, side_by_side.slot())
        started = time.perf_counter()
        found = yolo.detect(
            model,
            image,
            device=job.device,
            threads=params.threads or job.threads,
            confidence=params.confidence,
            iou=params.iou,
            classes=class_ids(params.classes, yolo.names(model), params.model_name),
            imgsz=params.imgsz,
            max_det=params.max_det,
        )
        seconds = time.perf_counter() - started
        counts = dict(Counter(d.label for d in found.detections).most_common())
        report: dict[str, Any] = {
            "image": job.source_name,
            "width": image.width,
            "height": image.height,
            "model": params.model_name,
            "counts": counts,
            "detections": [
                {
                    "label": d.label,
                    "confidence": round(d.confidence, 4),
                    "box": [round(v, 1) for v in d.box],
                }
                for d in found.detections
            ],
        }
        drawn = job.workdir / "annotated.jpg"
        found.save_annotated(drawn)
        meaning = MEANINGS.get(params.model, {})
        seen = ", ".join(
            f"{n} {label}" + (f" ({meaning[label]})" if label in meaning else "")
            for label, n in counts.items()
        )
        words = f"{job.source_name}: {seen or 'nothing'} detected by {params.model_name}."
        return StepResult(
            [
                json_artifact(job, "detections", report),
                Artifact(f"{job.stem}.annotated.jpg", drawn, "image/jpeg"),
                sentence(job, "detections", words),
            ],
            data={
                "counts": counts,
                "detections": len(found.detections),
                "model": params.model_name,
                "width": image.width,
                "height": image.height,
                "seconds": round(seconds, 3),
            },
            models=[params.model_name],
        )


def class_ids(wanted: list[str] | None, names: dict[int, str], model: str) -> list[int] | None:
    """The model's ids of the class names a rule asks for (any case); an unknown name is a
    mistake in the rule, said with the names the model knows."""
    if wanted is None:
        return None
    ids = {name.casefold(): i for i, name in names.items()}
    unknown = [w for w in wanted if w.casefold() not in ids]
    if unknown:
        known = list(names.values())
        shown = ", ".join(known[:MAX_NAMES_SHOWN])
        more = f" and {len(known) - MAX_NAMES_SHOWN} more" if len(known) > MAX_NAMES_SHOWN else ""
        raise StepError(
            f"{model} has no class {', '.join(map(repr, unknown))}; its classes are {shown}"
            f"{more}. Fix `classes` in the rule"
        )
    return sorted({ids[w.casefold()] for w in wanted})
