"""What the photo steps (detect, classify) share: their model, size and thread parameters, and
the sentence each writes about a photo so that the `index` step makes it searchable."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from caixa import models
from caixa.pipelines.base import Artifact, StepInput, rules_folder
from caixa.pipelines.common.images import MAX_PIXELS

WEIGHTS = (".pt", ".onnx")  # what ultralytics loads


class PhotoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    PACKAGED: ClassVar[tuple[str, ...]]  # the packaged models this step runs

    model: str  # a packaged model's name, or an absolute path to ultralytics weights
    max_pixels: int = Field(MAX_PIXELS, ge=1)  # larger images are refused from their header
    # torch's CPU threads; default: the lane's (StepInput.threads). ONNX models run on onnxruntime's own.
    threads: int | None = Field(None, ge=1)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str, info: ValidationInfo) -> str:
        if value in cls.PACKAGED:
            return value
        packaged = ", ".join(cls.PACKAGED)
        if value in models.PACKAGED:
            raise ValueError(f"{value} is not a model for this step (packaged: {packaged})")
        path = Path(value).expanduser()
        if path.suffix.lower() not in WEIGHTS or (
            not path.is_absolute() and rules_folder(info) is None
        ):
            raise ValueError(
                f"give a packaged model ({packaged}) or the path of ultralytics weights (.pt "
                "or .onnx; a path may start with ~, or be relative to the rules file)"
            )
        path = Path(models.place(path, rules_folder(info)))
        if not path.is_file():
            raise ValueError(f"no model file at {path}")
        return str(path)

    @property
    def model_name(self) -> str:
        """The model as a user knows it: its packaged name, or its file's name."""
        return self.model if self.model in self.PACKAGED else Path(self.model).name


def sentence(job: StepInput, suffix: str, text: str) -> Artifact:
    """`text` as the job's `<stem>.<suffix>.txt`: what `index` embeds, and a user can read."""
    target = job.workdir / f"{suffix}.txt"
    target.write_text(text + "\n", encoding="utf-8")
    return Artifact(f"{job.stem}.{suffix}.txt", target, "text/plain; charset=utf-8")
