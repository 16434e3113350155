"""The transcribe step: what was said in a recording, or in a video's sound, as text.

Whisper (faster-whisper) hears the audio block by block (media.py) and every segment is
written as it comes (writers.py): `<stem>.txt` in paragraphs at the speaker's pauses,
`<stem>.srt` and `<stem>.vtt` subtitles, and `<stem>.segments.json` with Whisper's confidence
figures per segment (and words with times when the rule asks). The language found (or forced)
is told to the steps after it (`fields["language"]`), so translate and index take it instead
of guessing it again from the text.

A recording with no speech fails with "no speech found": a transcript with nothing in it has
nothing to translate, index or read, and the person who dropped it should hear that.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from caixa import models
from caixa.errors import InputError, StepError
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
from caixa.pipelines.common.language import code as language_code
from caixa.pipelines.common.timecode import clock
from caixa.pipelines.transcribe import media, whisper
from caixa.pipelines.transcribe.writers import Segment, Transcript

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

# Seconds of audio Whisper is given at once: ~19 MB of samples, and a bounded spectrogram,
# whatever the recording's length. Blocks end at a quiet moment (media.quiet_cut).
BLOCK_SECONDS = 600.0
OUTPUTS = {  # writer's file -> (suffix of the published name, media type)
    "txt": (".txt", "text/plain"),
    "srt": (".srt", "application/x-subrip"),
    "vtt": (".vtt", "text/vtt"),
    "json": (".segments.json", "application/json"),
}


class TranscribeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = whisper.PACKAGED  # or the path of a faster-whisper (CTranslate2) model folder
    language: str = "auto"  # or the language spoken, e.g. pt: skips detection
    task: Literal["transcribe", "translate"] = "transcribe"  # translate: Whisper's own, to English
    vad: bool = True  # skip silence (Silero VAD): faster, and no words invented in the quiet
    beam_size: int = Field(5, ge=1, le=20)
    word_timestamps: bool = False  # each word's time in the segments' JSON
    initial_prompt: str | None = None  # names and jargon the speaker uses, spelled right
    threads: int | None = Field(None, ge=1)  # CPU threads; default: the lane's
    max_duration: float = Field(4 * 3600, gt=0)  # seconds; longer recordings are refused

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        return language_code(value, auto=True)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str, info: ValidationInfo) -> str:
        if value == whisper.PACKAGED:
            return value
        try:
            place = models.place(value, rules_folder(info))
            whisper.check(Path(place))
        except ValueError as exc:
            raise ValueError(
                f"give {whisper.PACKAGED} (packaged) or the path of a faster-whisper model "
                "folder (relative to the rules file, or starting with / or ~)"
            ) from exc
        except models.ModelNotFoundError as exc:
            raise ValueError(str(exc)) from exc
        return place


class TranscribeStep(BaseStep):
    name: ClassVar[str] = "transcribe"
    resource: ClassVar[Resource] = Resource.accelerator
    Params: ClassVar[type[BaseModel]] = TranscribeParams
    requires: ClassVar[Requirements] = Requirements(
        modules=(whisper.MODULE, media.MODULE, *whisper.PARTS), extra="transcribe"
    )

    @classmethod
    def model_of(cls, params: TranscribeParams) -> str:
        return params.model

    @classmethod
    def threads_follow(cls, params: TranscribeParams) -> bool:
        """On a CPU the recordings of a batch are heard side by side, one thread each, as many
        at once as the lane's budget gives threads (every core while no CPU step runs) and
        memory allows copies. A model too large for two copies, or the rule's own `threads`,
        keeps the share: CTranslate2 fixes a model's threads when it loads."""
        return params.threads is None and _copies(params) > 1

    def run(self, job: StepInput, params: TranscribeParams) -> StepResult:
        model, threads, _ = _model(job, params, 1)
        return self._hear(job, params, model, threads)

    def run_batch(
        self, jobs: Sequence[StepInput], params: TranscribeParams
    ) -> list[StepResult | Exception]:
        """Recordings that wait together, heard side by side on a CPU: one model with a worker
        per thread, each worker hearing one recording on one thread. CTranslate2 spreads one
        recording badly over threads (Whisper base on 2 threads: 1.03x one), while side by side
        on 2 cores it heard 1.84x the memos/s (bench/batching.py), the same text. On a GPU, one
        after another. A recording that fails, fails alone."""
        model, threads, at_once = _model(jobs[0], params, len(jobs))
        return side_by_side.each(lambda job: self._hear(job, params, model, threads), jobs, at_once)

    def _hear(
        self, job: StepInput, params: TranscribeParams, model: WhisperModel, threads: int
    ) -> StepResult:
        found = media.probe(job.source, job.source_name)
        if found.duration is not None and found.duration > params.max_duration:
            raise InputError(_too_long(job.source_name, found.duration, params.max_duration))
        language = None if params.language == "auto" else params.language
        probability: float | None = None
        decoded = media.Decoded()
        offset = 0.0
        started = time.perf_counter()
        with Transcript(job.workdir) as out:
            for block in media.blocks(job.source, job.source_name, BLOCK_SECONDS, decoded):
                if decoded.seconds > params.max_duration:
                    raise InputError(
                        _too_long(job.source_name, decoded.seconds, params.max_duration)
                    )
                heard = whisper.hear(model, block, params.vad, **_options(params, language))
                out.pauses.extend(offset + p for p in heard.pauses)
                for s in heard.segments:
                    segment = _segment(s, offset)
                    out.add(segment)
                    if found.duration:  # how far, for `caixa status` and the page; Whisper's
                        # last segment may end a little after the recording does
                        job.progress(min(1.0, segment.end / found.duration))
                if language is None and heard.info is not None:
                    info = heard.info
                    language, probability = info.language, round(info.language_probability, 4)
                offset += len(block) / media.RATE
        seconds = time.perf_counter() - started
        if not out.count:
            raise InputError(
                f"no speech found in {job.source_name} ({clock(decoded.seconds)} of audio"
                f"{' heard as silence' if params.vad else ''}); if someone speaks in it, "
                "try the rule with vad: false"
            )
        facts: dict[str, Any] = {
            "language": language,
            "language_probability": probability,
            "language_forced": params.language != "auto",
            "task": params.task,
            "duration_seconds": round(decoded.seconds, 2),
            "real_time_factor": round(seconds / decoded.seconds, 4) if decoded.seconds else None,
            "segments": out.count,
            "paragraphs": len(out.paragraphs),
            "words": out.words,
            "format": found.format,
            "codec": found.codec,
            "device": str(model.model.device),
            "threads": threads,
        }
        notes = _damage(found, decoded)
        if notes:
            facts["notes"] = notes
        artifacts = [
            Artifact(f"{job.stem}{suffix}", out.paths[kind], media_type)
            for kind, (suffix, media_type) in OUTPUTS.items()
        ]
        spoken = "en" if params.task == "translate" else language
        return StepResult(
            artifacts, data=facts, models=[params.model], fields={"language": str(spoken)}
        )


def _model(job: StepInput, params: TranscribeParams, wanted: int) -> tuple[WhisperModel, int, int]:
    """Whisper for up to `wanted` recordings, the threads each is heard on, and how many it
    hears at once. On a CPU, when the budget gives several threads: a worker per thread, each
    on one thread and holding a copy of the model (a recording alone uses one), so a model per
    budget count. Else (the share of one thread, a model too large for copies, the rule's own
    `threads`, a GPU): the model on every thread given, one recording after another."""
    try:
        path = whisper.folder(params.model, job.home)
    except models.ModelNotFoundError as exc:
        raise StepError(f"cannot use the Whisper model {params.model!r}: {exc}") from exc
    threads = params.threads or job.threads
    workers = min(threads, _copies(params)) if job.device == "cpu" and not params.threads else 1
    if workers > 1:
        return whisper.load(path, job.device, 1, workers=workers), 1, min(wanted, workers)
    return whisper.load(path, job.device, threads), threads, 1


def _copies(params: TranscribeParams) -> int:
    """How many copies of the model side by side hearing holds: each CTranslate2 worker has
    its own, about its model.bin (145 MB for the packaged base), so a large model is heard one
    recording at a time on a 16 GB machine."""
    weights = Path(params.model) / "model.bin"
    if params.model == whisper.PACKAGED:
        size = whisper.MODEL_SIZE
    elif weights.is_file():
        size = weights.stat().st_size
    else:  # whisper.load says what is wrong with the folder
        return 1
    return side_by_side.copies(size)


def _options(params: TranscribeParams, language: str | None) -> dict[str, Any]:
    return {
        "language": language,
        "task": params.task,
        "beam_size": params.beam_size,
        "word_timestamps": params.word_timestamps,
        "initial_prompt": params.initial_prompt,
    }


def _segment(found: Any, offset: float) -> Segment:
    """faster-whisper's segment, its times counted from the start of the recording."""
    words = None
    if found.words is not None:
        words = [
            {
                "start": round(offset + w.start, 3),
                "end": round(offset + w.end, 3),
                "word": w.word,
                "probability": round(w.probability, 4),
            }
            for w in found.words
        ]
    return Segment(
        offset + found.start,
        offset + found.end,
        found.text,
        found.avg_logprob,
        found.no_speech_prob,
        found.compression_ratio,
        words,
    )


def _too_long(name: str, seconds: float, limit: float) -> str:
    return (
        f"{name} is {clock(seconds)} long, over this rule's max_duration of {clock(limit)} "
        f"({limit:g} s): raise max_duration in the rule to transcribe it"
    )


def _damage(found: media.Probe, decoded: media.Decoded) -> list[str]:
    """What a user should know about a file that did not decode whole."""
    notes = []
    if decoded.damaged:
        notes.append(
            f"the audio is damaged after {clock(decoded.seconds)}: transcribed up to there"
        )
    elif found.duration and decoded.seconds < found.duration - 1.0:
        notes.append(
            f"the file ends at {clock(decoded.seconds)} though its header says "
            f"{clock(found.duration)}: it was cut short; transcribed what is there"
        )
    return notes
