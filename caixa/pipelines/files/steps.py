"""Steps that need no model: a copy of the source, and its text as clean UTF-8."""

from __future__ import annotations

import shutil
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from caixa.nofollow import open_regular, read_regular
from caixa.pipelines.base import Artifact, BaseStep, NoParams, StepInput, StepResult
from caixa.pipelines.common.text import decode


class CopyStep(BaseStep):
    """The source itself, published unchanged (the simplest useful rule: sort files by type)."""

    name: ClassVar[str] = "copy"

    def run(self, job: StepInput, params: NoParams) -> StepResult:
        target = job.workdir / "source"
        with open_regular(job.source) as source, target.open("wb") as copy:
            shutil.copyfileobj(source, copy, 1 << 20)
        return StepResult([Artifact(job.source_name, target, job.media_type)])


class TextParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    encoding: str = "auto"  # or a codec name, when detection guesses wrong
    newline: Literal["lf", "crlf"] = "lf"


class TextStep(BaseStep):
    """Text in any common encoding (UTF-8/16, Latin-1, cp1252, ...) written as clean UTF-8."""

    name: ClassVar[str] = "text"
    Params: ClassVar[type[BaseModel]] = TextParams

    def run(self, job: StepInput, params: TextParams) -> StepResult:
        raw = read_regular(job.source)
        text, encoding, replaced = decode(raw, params.encoding, job.media_type)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        if params.newline == "crlf":
            text = text.replace("\n", "\r\n")
        target = job.workdir / "text.txt"
        target.write_text(text, encoding="utf-8", newline="")
        return StepResult(
            [Artifact(f"{job.stem}.txt", target, "text/plain; charset=utf-8")],
            data={"encoding": encoding, "characters": len(text), "replaced_bytes": replaced},
        )
