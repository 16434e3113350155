"""The translate step, and `translate_text` for other code (search translates its queries).

The source language is the rule's, else the one an earlier step found (`fields["language"]`:
the language transcribe heard), else detected; a text already in the target language is left
alone. The text is cut by caixa's own splitter into pages (form feeds),
paragraphs and sentences, translated by an engine, and put back in the same shape: one
paragraph for each paragraph, which is how a transcript's times stay with its translation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from caixa.errors import InputError, StepError
from caixa.pipelines.base import (
    Artifact,
    BaseStep,
    Requirements,
    Resource,
    StepInput,
    StepResult,
)
from caixa.pipelines.common.language import COMMON, detect
from caixa.pipelines.common.language import MODULE as DETECTOR
from caixa.pipelines.common.language import code as language_code
from caixa.pipelines.common.sentences import paragraphs, pieces
from caixa.pipelines.common.text import check_length, input_text
from caixa.pipelines.translate import argos, bergamot

Engine = Literal["auto", "bergamot", "argos"]
ENGINES: dict[str, Requirements] = {
    "bergamot": Requirements(modules=(bergamot.MODULE,), extra="translate"),
    "argos": Requirements(modules=(argos.MODULE,), extra="argos"),
}
# Bergamot's tiny models lose the thread past ~80 words (a 130-word clause came back as 97
# words of repetitions): longer sentences, run-on OCR lines mostly, go in pieces.
MAX_WORDS = 50


class TranslateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str  # the target language, e.g. en
    engine: Engine = "auto"  # auto: bergamot for en<->pt, argos for the rest
    source: str = "auto"  # or the language the texts are in, when detection guesses wrong
    argos_models: Path | list[Path] | None = None  # a folder of .argosmodel files, or files
    max_characters: int = Field(500_000, ge=1)  # about 200 pages; more holds the lane too long

    @field_validator("to", "source", mode="before")
    @classmethod
    def _code(cls, value: object, info: ValidationInfo) -> object:
        if not isinstance(value, str):
            return value
        return language_code(value, auto=info.field_name == "source")

    @field_validator("argos_models")
    @classmethod
    def _absolute(cls, value: Path | list[Path] | None) -> Path | list[Path] | None:
        for path in [value] if isinstance(value, Path) else value or []:
            if not path.expanduser().is_absolute():
                raise ValueError("give an absolute path, or one that starts with ~")
        return value


class TranslateStep(BaseStep):
    name: ClassVar[str] = "translate"
    resource: ClassVar[Resource] = Resource.accelerator
    Params: ClassVar[type[BaseModel]] = TranslateParams
    requires: ClassVar[Requirements] = Requirements(
        modules=(DETECTOR, bergamot.MODULE), extra="translate"
    )

    @classmethod
    def missing_for(cls, params: TranslateParams) -> list[str]:
        """argos is an extra of its own (it pulls torch): a rule that asks for it waits."""
        return ENGINES["argos"].missing() if params.engine == "argos" else []

    @classmethod
    def model_of(cls, params: TranslateParams) -> str | None:
        """Bergamot's en<->pt models when they will translate; argos models depend on the
        detected language, so are not known before the step runs."""
        into_pair = any(params.to in pair for pair in bergamot.PAIRS)
        return bergamot.PACKAGED if params.engine != "argos" and into_pair else None

    @classmethod
    def preload(cls, params: TranslateParams, device: str, threads: int, home: Path) -> None:
        """Bergamot's models into the target language (argos's depend on the text's)."""
        if cls.model_of(params) == bergamot.PACKAGED:
            bergamot.preload(params.to)

    def run(self, job: StepInput, params: TranslateParams) -> StepResult:
        text, _ = input_text(job, "translate")
        if not _has_words(text):
            raise InputError("there is no text to translate: it is empty or has no words")
        check_length(text, params.max_characters, "translate", "")
        own = []
        if params.argos_models is not None:
            own = argos.install(argos.model_files(params.argos_models), job.home)
        facts: dict[str, object] = {"target_language": params.to}
        models = []
        told = job.fields.get("language")
        if params.source != "auto":
            source = params.source
            facts.update(source_language=source)
        elif told:  # an earlier step knows it better than the text does (transcribe)
            source = told
            facts.update(source_language=source, source_language_from="step")
        else:
            found = detect(text, _candidates(job.home), job.home)
            source = found.language
            facts.update(source_language=source, confidence=found.confidence)
            models.append(DETECTOR)
        if source == params.to:
            return StepResult(
                data={"translated": False, "reason": f"already {source}", **facts}, models=models
            )
        plan = _plan(params.engine, source, params.to, job.home, own, job.threads)
        started = time.monotonic()
        translated, count = _translate(text, plan)
        seconds = time.monotonic() - started
        target = job.workdir / "translation.txt"
        target.write_text(translated, encoding="utf-8")
        return StepResult(
            [Artifact(f"{job.stem}.{params.to}.txt", target, "text/plain")],
            data={
                "translated": True,
                **facts,
                "engine": plan.engine,
                "sentences": count,
                "seconds": round(seconds, 3),
            },
            models=models + plan.models,
        )


def translate_text(
    text: str, source: str, target: str, *, home: Path, engine: str = "auto", threads: int = 1
) -> str:
    """`text` in `target` ("auto" as `source` detects it), with the argos models installed
    under `home`. Text with no words comes back as it is."""
    if engine not in ENGINES and engine != "auto":
        raise ValueError(f"unknown engine {engine!r} (known: auto, {', '.join(ENGINES)})")
    if not _has_words(text):
        return text
    if source == "auto":
        source = detect(text, _candidates(home), home).language
    if source == target:
        return text
    return _translate(text, _plan(engine, source, target, home, [], threads))[0]


@dataclass(frozen=True)
class _Plan:
    engine: str
    models: list[str]
    run: Callable[[list[list[str]]], list[str]]  # sentences of each paragraph -> paragraphs


def _plan(
    engine: str, source: str, target: str, home: Path, own: list[argos.Package], threads: int
) -> _Plan:
    """The engine for this pair: bergamot when it can (auto), else argos, else a clear error."""
    bergamot_ready = not ENGINES["bergamot"].missing()
    if (source, target) in bergamot.PAIRS and (
        engine == "bergamot" or (engine == "auto" and bergamot_ready)
    ):
        _need("bergamot")
        return _Plan(
            "bergamot",
            [bergamot.model_name(source, target)],
            lambda groups: bergamot.translate(groups, source, target, threads),
        )
    route = argos.route(source, target, home, own) if engine in ("auto", "argos") else None
    if route:
        _need("argos")
        return _Plan(
            "argos", argos.model_names(route), lambda groups: _through(route, groups, home)
        )
    which = "no engine here translates" if engine == "auto" else f"{engine} does not translate"
    raise StepError(
        f"{which} {source} -> {target}. Installed: {_installed(home)}. Add an .argosmodel for "
        f"{source} -> {target} to the rule's argos_models, or set the step's `to` or `source`."
    )


def _through(route: list[argos.Package], groups: list[list[str]], home: Path) -> list[str]:
    """Through each package in turn (source -> English -> target when there is no direct one)."""
    done = argos.translate(groups, route[0], home)
    for package in route[1:]:
        done = argos.translate([pieces(paragraph, MAX_WORDS) for paragraph in done], package, home)
    return done


def _installed(home: Path) -> str:
    def listed(pairs: set[tuple[str, str]]) -> str:
        return ", ".join(f"{a} -> {b}" for a, b in sorted(pairs)) or "none"

    engines = []
    for name, pairs in (("bergamot", set(bergamot.PAIRS)), ("argos", argos.pairs(home))):
        missing = ENGINES[name].missing()
        engines.append(f"{name}: {'missing ' + '; '.join(missing) if missing else listed(pairs)}")
    return "; ".join(engines)


def _need(engine: str) -> None:
    missing = ENGINES[engine].missing()
    if missing:
        raise StepError(f"the {engine} engine cannot run: missing {'; '.join(missing)}")


def _candidates(home: Path) -> set[str]:
    """Languages a detection chooses from: the common ones and any an engine translates."""
    return set(COMMON) | {a for a, _ in bergamot.PAIRS | argos.pairs(home)}


def _translate(text: str, plan: _Plan) -> tuple[str, int]:
    """The translation, with its paragraphs and pages where they were; how many sentences."""
    pages = text.split("\f")
    blocks = [paragraphs(page) for page in pages]
    groups = [pieces(p, MAX_WORDS) for block in blocks for p in block]
    done = iter(plan.run(groups))
    out = []
    for page, block in zip(pages, blocks, strict=True):
        tail = "\n" if block and page.endswith("\n") else ""
        out.append("\n\n".join(next(done) for _ in block) + tail)
    return "\f".join(out), sum(map(len, groups))


def _has_words(text: str) -> bool:
    return any(ch.isalpha() for ch in text)
