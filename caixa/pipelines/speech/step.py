"""The tts step: a text or Markdown file read aloud into `<stem>.wav` (and a compressed copy).

The voice follows the text's language: the Piper voice the rule gives for it, else espeak-ng's
voice for that language. The text is cut into paragraphs, sentences and pieces of at most
MAX_WORDS words, spoken piece by piece and appended to one WAV as it is made, with a pause
between pieces: memory stays that of one piece whatever the length of the text.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from caixa import models
from caixa.errors import InputError
from caixa.pipelines.base import (
    Artifact,
    BaseStep,
    Requirements,
    Resource,
    StepInput,
    StepResult,
    rules_folder,
)
from caixa.pipelines.common import side_by_side
from caixa.pipelines.common.language import COMMON, detect
from caixa.pipelines.common.language import MODULE as DETECTOR
from caixa.pipelines.common.language import code as language_code
from caixa.pipelines.common.programs import versions
from caixa.pipelines.common.sentences import paragraphs, pieces
from caixa.pipelines.common.text import input_text
from caixa.pipelines.speech import audio, espeak, piper, plaintext

DEFAULT_VOICES = {"en": "en_US-joe-medium"}
# Piper's memory grows ~6 MB per word of a sentence and its pace drops past ~40 words
# (measured: 30 words 145 MB, 100 words 590 MB, 200 words 1.2 GB): longer sentences are cut.
MAX_WORDS = 30
PARAGRAPH_PAUSE = 2.0  # times the sentence silence, between paragraphs
DETECT_CHARS = 5000  # the language of a text is told from its beginning


class TtsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # language -> Piper voice (a packaged name, or the absolute path of an .onnx with its
    # .onnx.json beside it) or "espeak-ng:VOICE"; added to the default {en: en_US-joe-medium}.
    # A language without a voice here is spoken by espeak-ng (pt -> pt-br, en -> en-us, ...).
    voices: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_VOICES))
    language: str = "auto"  # or the text's language, when detection guesses wrong
    speed: float = Field(1.0, ge=0.5, le=2.5)  # times the voice's normal pace
    speaker: int | str | None = None  # by id or name, for Piper voices with several speakers
    sentence_silence: float = Field(0.25, ge=0, le=5)  # seconds between sentences
    compress: Literal["none", "ogg", "mp3"] = "none"  # a compressed copy beside the WAV
    markdown: bool | None = None  # clean Markdown markup; default: by the file's name
    max_characters: int = Field(500_000, ge=1)  # about 9 hours of speech
    threads: int | None = Field(None, ge=1)  # Piper's CPU threads; default: the lane's

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        return language_code(value, auto=True)

    @field_validator("voices")
    @classmethod
    def _voices(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        voices = {language_code(language): ref.strip() for language, ref in value.items()}
        for language, ref in voices.items():
            if ref.startswith(espeak.PREFIX):
                if not ref.removeprefix(espeak.PREFIX):
                    raise ValueError(f"{language}: name the espeak-ng voice, e.g. espeak-ng:pt")
                continue
            try:
                voices[language] = models.place(ref, rules_folder(info))
                piper.voice_files(voices[language])
            except ValueError as exc:
                raise ValueError(
                    f"{language}: give a packaged voice ({', '.join(DEFAULT_VOICES.values())}), "
                    "the path of a Piper .onnx voice (relative to the rules file, or starting "
                    "with / or ~), or espeak-ng:VOICE"
                ) from exc
            except models.ModelNotFoundError as exc:
                raise ValueError(f"{language}: {exc}") from exc
        return {**DEFAULT_VOICES, **voices}

    @field_validator("compress")
    @classmethod
    def _codec(cls, value: str) -> str:
        missing = Requirements(modules=(audio.MODULE,), extra="tts").missing()
        if value != "none" and missing:
            raise ValueError(f"compress: {value} needs {'; '.join(missing)}")
        return value

    def voice_of(self, language: str) -> str:
        """The voice for a language: the rule's Piper voice, else espeak-ng's for it."""
        return self.voices.get(language, espeak.PREFIX + espeak.voice_for(language))


@dataclass(frozen=True)
class Voice:
    engine: Literal["piper", "espeak-ng"]
    name: str  # the voice's file stem, or the espeak-ng voice
    model: str  # for the manifest: the packaged name or path, or "espeak-ng VOICE"
    speak: Callable[[str], Iterator[audio.Chunk]]
    speaker: int | None = None  # the speaker id, on a Piper voice with several


class TtsStep(BaseStep):
    name: ClassVar[str] = "tts"
    resource: ClassVar[Resource] = Resource.accelerator
    Params: ClassVar[type[BaseModel]] = TtsParams
    requires: ClassVar[Requirements] = Requirements(
        modules=(piper.MODULE, DETECTOR, "markdown_it"),
        executables=(espeak.ESPEAK.name,),
        extra="tts",
    )

    @classmethod
    def threads_follow(cls, params: Any) -> bool:
        """onnxruntime fixes a session's threads, so each count in use holds its own session
        of the voice (tens of MB): one thread made Piper 0.6x its speed on two idle cores."""
        return True

    @classmethod
    def backend_of(cls, params: Any) -> str | None:
        return "onnxruntime"  # Piper's voices; espeak-ng is a CPU program

    @classmethod
    def model_of(cls, params: Any) -> str | None:
        """The Piper voice that will speak: the forced language's, or the only one configured;
        None when the text's language decides, or when espeak-ng speaks (it loads no model)."""
        if params.language != "auto":
            ref = params.voice_of(params.language)
        elif len(params.voices) == 1:
            (ref,) = params.voices.values()
        else:
            return None
        return None if ref.startswith(espeak.PREFIX) else ref

    @classmethod
    def preload(cls, params: TtsParams, device: str, threads: int, home: Path) -> None:
        """The voice that will speak, when it is known before the text: the session a text
        alone runs on and, on a CPU, the one-thread session a batch's texts share."""
        ref = cls.model_of(params)
        if ref is None:
            return
        counts = {params.threads or threads}
        if device == "cpu" and not params.threads:
            counts.add(1)
        for count in sorted(counts):
            piper.load(ref, device, count, home)

    def run_batch(
        self, jobs: Sequence[StepInput], params: TtsParams
    ) -> list[StepResult | Exception]:
        """Texts that wait together, spoken side by side on a CPU: a thread each, on the voice's
        one-thread session (onnxruntime takes calls at once; espeak-ng phonemizes one text at
        a time). Piper spreads one sentence badly over threads: on 2 cores, 1.1-1.2x the texts/s
        of one after another on both (bench/batching.py). On a GPU, or with the rule's own
        `threads`, one after another."""
        return side_by_side.on_cpu(lambda job: self.run(job, params), jobs, params.threads)

    def run(self, job: StepInput, params: TtsParams) -> StepResult:
        text = _speakable(job, params)
        facts: dict[str, Any] = {}
        used = []
        if params.language == "auto":
            found = detect(text[:DETECT_CHARS], set(COMMON) | set(params.voices), job.home)
            language = found.language
            facts.update(language=language, language_confidence=found.confidence)
            used.append(DETECTOR)
        else:
            language = params.language
            facts.update(language=language)
        voice = _voice(params.voice_of(language), params, job)
        wav = job.workdir / "speech.wav"
        codec = None if params.compress == "none" else params.compress
        spoken = 0
        started = time.perf_counter()
        with audio.AudioWriter(wav, codec) as out:
            pause = 0.0
            for paragraph in paragraphs(text):
                for piece in pieces(paragraph, MAX_WORDS):
                    spoken += 1
                    for chunk in voice.speak(piece):
                        out.write(chunk, pause)
                        pause = params.sentence_silence
                pause = PARAGRAPH_PAUSE * params.sentence_silence
        seconds = time.perf_counter() - started
        if not out.frames:
            raise InputError(f"{voice.engine} made no sound of the text: it has nothing to speak")
        artifacts = [Artifact(f"{job.stem}.wav", wav, audio.WAV_MEDIA_TYPE)]
        if out.copy is not None:
            kind = audio.CODECS[params.compress]
            artifacts.append(Artifact(f"{job.stem}{kind[2]}", out.copy, kind[3]))
        facts |= {
            "engine": voice.engine,
            "voice": voice.name,
            "duration_seconds": round(out.seconds, 2),
            "sample_rate": out.rate,
            "characters": len(text),
            "pieces": spoken,
            "speed": params.speed,
            "real_time_factor": round(seconds / out.seconds, 4),
        }
        if voice.speaker is not None:
            facts["speaker"] = voice.speaker
        if voice.engine == espeak.ESPEAK.name:
            facts["programs"] = versions(espeak.ESPEAK)
        return StepResult(artifacts, data=facts, models=[*used, voice.model])


def _voice(ref: str, params: TtsParams, job: StepInput) -> Voice:
    if ref.startswith(espeak.PREFIX):
        name = ref.removeprefix(espeak.PREFIX)
        scratch = job.workdir / "piece.wav"
        return Voice(
            "espeak-ng",
            name,
            f"espeak-ng {name}",
            lambda text: espeak.speak(text, name, params.speed, scratch),
        )
    loaded = piper.load(ref, job.device, params.threads or job.threads, job.home)
    settings = piper.settings(loaded, params.speed, params.speaker)
    name = piper.voice_files(ref)[0].stem
    speak = partial(piper.speak, loaded, config=settings)
    return Voice("piper", name, ref, speak, settings.speaker_id)


def _speakable(job: StepInput, params: TtsParams) -> str:
    """The words to say: the input text, cleaned of Markdown markup when it is Markdown."""
    raw, _ = input_text(job, "tts")
    if not raw.strip():
        raise InputError(f"there is no text to speak: {job.source_name} is empty or only spaces")
    markdown = params.markdown
    if markdown is None:
        markdown = plaintext.is_markdown(job.source_name, job.media_type)
    text = plaintext.from_markdown(raw) if markdown else raw
    if not any(ch.isalnum() for ch in text):
        what = "Markdown markup (headings, rules, emphasis marks, code)" if markdown else "symbols"
        raise InputError(f"there is no text to speak: {job.source_name} has only {what}, no words")
    if len(text) > params.max_characters:
        hours = len(text) / 15 / 3600  # ~15 characters per second of speech
        raise InputError(
            f"the text has {len(text):,} characters, over this rule's limit of "
            f"{params.max_characters:,} (max_characters), about {hours:.0f} hours of speech; "
            "split it, or raise max_characters in the rule"
        )
    return text
