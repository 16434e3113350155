"""Facts about a file read from its content: type, size, hash, image size, PDF pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from caixa.pipelines.base import BaseStep, NoParams, StepInput, StepResult
from caixa.pipelines.common.files import json_artifact, sha256_of


class MetadataStep(BaseStep):
    name: ClassVar[str] = "metadata"

    def run(self, job: StepInput, params: NoParams) -> StepResult:
        facts: dict[str, Any] = {
            "name": job.source_name,
            "media_type": job.media_type,
            "size": job.source.stat().st_size,
            "sha256": sha256_of(job.source),
        }
        if job.media_type.startswith("image/"):
            facts.update(image_facts(job.source))
        elif job.media_type == "application/pdf":
            facts.update(pdf_facts(job.source))
        return StepResult([json_artifact(job, "metadata", facts)], data=facts)


def image_facts(path: Path) -> dict[str, Any]:
    """Dimensions from the header only: a decompression bomb is never decoded here."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return {
                "width": img.width,
                "height": img.height,
                "mode": img.mode,
                "frames": getattr(img, "n_frames", 1),
            }
    except (UnidentifiedImageError, OSError) as exc:
        return {"image_error": f"cannot read the image header: {exc}"}


def pdf_facts(path: Path) -> dict[str, Any]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        return {"pages": len(PdfReader(path).pages)}
    except (PdfReadError, OSError, ValueError) as exc:
        return {"pdf_error": f"cannot read the PDF: {exc}"}
