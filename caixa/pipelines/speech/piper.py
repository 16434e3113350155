"""Piper voices: an `.onnx` model and its `.onnx.json` config, loaded once per process.

A voice is a packaged model name (`en_US-joe-medium`) or the path of a user's `.onnx`; nothing
is downloaded. Piper runs its model once per sentence it finds, with memory growing with the
sentence (~6 MB per word measured here): the caller hands it short pieces.

caixa builds the voice's ONNX session itself instead of `PiperVoice.load`, to choose its threads:
`load` gives onnxruntime every core of the machine, even in a worker pinned to fewer, and
threads beyond a process's cores made speech 2.1x slower on a busy 2-core machine (real-time
factor 0.19 vs 0.089, best of 6). Threads default to the CPUs this process may use
(threads.py), which in the daemon is the accelerator lane's share.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from caixa import models
from caixa.errors import StepError
from caixa.pipelines.common import onnx
from caixa.pipelines.speech.audio import Chunk

if TYPE_CHECKING:
    from piper import PiperVoice, SynthesisConfig

MODULE = "piper"
_ESPEAK = threading.Lock()  # espeak-ng: one global state a process


def voice_files(ref: str) -> tuple[Path, Path]:
    """The model and config of a voice, or ModelNotFoundError saying which is missing."""
    if ref not in models.PACKAGED and not Path(ref).expanduser().exists():
        packaged = [n for n, (_, inside) in models.PACKAGED.items() if inside.endswith(".onnx")]
        raise models.ModelNotFoundError(
            f"no Piper voice at {ref} (packaged voices: {', '.join(packaged)})"
        )
    model = models.locate(ref)
    if model.is_dir() or model.suffix != ".onnx":
        raise models.ModelNotFoundError(f"a Piper voice is an .onnx file; {model} is not one")
    config = model.with_name(model.name + ".json")
    if not config.is_file():
        raise models.ModelNotFoundError(
            f"the Piper voice {model} has no config beside it ({config.name}); "
            "Piper voices come as a pair: NAME.onnx and NAME.onnx.json"
        )
    return model, config


def load(ref: str, device: str, threads: int, home: Path | None = None) -> PiperVoice:
    """The voice, loaded the first time it is asked for in this process with these threads
    (a session per count: onnxruntime fixes them); on CUDA, once, when the device is a GPU and
    onnxruntime has the CUDA provider. With caixa's `home`, its graph is kept optimised there
    (onnx.py)."""
    import onnxruntime

    try:
        model, config = voice_files(ref)
    except models.ModelNotFoundError as exc:
        raise StepError(f"cannot use the Piper voice {ref!r}: {exc}") from exc
    cuda = (
        device.startswith("cuda")
        and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    )

    def loader() -> PiperVoice:
        from piper import PiperConfig, PiperVoice

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        providers: list[str | tuple[str, dict[str, str]]] = ["CPUExecutionProvider"]
        if cuda:  # Piper's own choice of CUDA settings
            providers.insert(0, ("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}))
        try:
            settings = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
            session = onnx.session(model, options, providers, home)
        except Exception as exc:  # onnxruntime and json raise many kinds for a damaged file
            raise StepError(
                f"cannot load the Piper voice {model}: {exc}. Are its .onnx and .onnx.json "
                "complete?"
            ) from exc
        voice = PiperVoice(session=session, config=settings)
        voice.phonemize = _one_at_a_time(voice.phonemize)  # type: ignore[method-assign]
        return voice

    return models.load(f"piper {model} {'cuda' if cuda else f'cpu {threads} threads'}", loader)


def _one_at_a_time(phonemize: Callable[[str], list[list[str]]]) -> Callable[[str], list[list[str]]]:
    """Piper's phonemize, for one text at a time in this process: espeak-ng, which it calls,
    keeps one global state, and a batch's texts are spoken on threads side by side."""

    def phonemized(text: str) -> list[list[str]]:
        with _ESPEAK:
            return phonemize(text)

    return phonemized


def settings(voice: PiperVoice, speed: float, speaker: int | str | None) -> SynthesisConfig:
    """Piper's synthesis settings: `speed` times the voice's own pace, and the speaker by id or
    name on a voice with several (a single-speaker voice ignores it, as Piper does)."""
    from piper import SynthesisConfig

    return SynthesisConfig(
        speaker_id=speaker_id(voice, speaker), length_scale=voice.config.length_scale / speed
    )


def speaker_id(voice: PiperVoice, speaker: int | str | None) -> int | None:
    names = voice.config.speaker_id_map
    count = voice.config.num_speakers
    if speaker is None or count <= 1:
        return None
    if isinstance(speaker, str):
        if speaker not in names:
            known = ", ".join(sorted(names)[:20]) + (", ..." if len(names) > 20 else "")
            raise StepError(f"this voice has no speaker {speaker!r} (speakers: {known})")
        return names[speaker]
    if not 0 <= speaker < count:
        raise StepError(f"this voice has speakers 0 to {count - 1}; speaker {speaker} is not one")
    return speaker


def speak(voice: PiperVoice, text: str, config: SynthesisConfig) -> Iterator[Chunk]:
    """The audio of each sentence Piper finds in `text`."""
    for chunk in voice.synthesize(text, config):
        yield Chunk(chunk.audio_int16_array, chunk.sample_rate)
