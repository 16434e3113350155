"""Speech to text speed and memory: the transcribe step (PyAV decoding in blocks, its own VAD
pass, the transcript, subtitles and segments written as they come) against a plain
faster-whisper `WhisperModel.transcribe(path, vad_filter=True)` whose segments are read into a
list, on the same audio with the same model (the packaged Whisper base, int8) and settings
(beam 5, VAD on, language detected), in the same run.

Speed: the real-time factor (seconds of work per second of audio; lower is faster) on ~70 s
of English speech from the packaged Piper voice, each contender ROUNDS times, interleaved in a
rotating order, best round counted (other work on a shared machine only slows a round down).
Both run on every CPU this process may use (caixa's default; in the daemon, the accelerator
lane's share). Target: step >= 0.95x the plain call (the plain factor divided by the step's).

Memory: the peak RSS each adds (a fresh process each, peak reset after the model is loaded) to
transcribe a 30-minute recording: the same talk at the start of every 5 minutes, silence
between (as a meeting with breaks; `--dense` repeats the talk back to back, which takes ~4x as
long to run). The plain call decodes the whole file into memory first; the step holds one
block (media.py) whatever the length.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
from _common import ratio, save

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (argos ships a `tests`)

from caixa.pipelines.base import StepInput
from caixa.pipelines.transcribe import whisper
from caixa.pipelines.transcribe.step import TranscribeParams, TranscribeStep
from tests import speech_clip

ROUNDS = 3
TARGET = 0.95
LONG_MINUTES = 30
EVERY = 300  # seconds: the talk starts again every 5 minutes in the long recording
CPUS = len(os.sched_getaffinity(0))


def plain_model(home: Path) -> Any:
    from faster_whisper import WhisperModel

    folder = whisper.assemble(home)
    return WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=CPUS)


def plain(model: Any, audio: Path) -> tuple[float, str]:
    start = time.perf_counter()
    segments, _ = model.transcribe(str(audio), beam_size=5, vad_filter=True)
    text = " ".join(s.text.strip() for s in list(segments))
    return time.perf_counter() - start, text


def step(root: Path, home: Path, name: str, audio: Path) -> tuple[float, str]:
    work = root / name
    work.mkdir()
    job = StepInput("bench", "bench", audio, audio.name, "audio/x-wav", (), work, home)
    start = time.perf_counter()
    TranscribeStep().run(job, TranscribeParams())
    seconds = time.perf_counter() - start
    return seconds, " ".join((work / "transcript.txt").read_text().split())


def long_recording(talk: Path, target: Path, dense: bool) -> float:
    """A 16 kHz mono WAV of LONG_MINUTES, the talk at the start of every EVERY seconds (back to
    back with `dense`); its length in seconds."""
    from faster_whisper.audio import decode_audio

    speech = (decode_audio(str(talk)) * 32767).astype(np.int16)
    every = len(speech) if dense else EVERY * 16_000
    total = LONG_MINUTES * 60 * 16_000
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        written = 0
        while written < total:
            piece = np.zeros(min(every, total - written), dtype=np.int16)
            n = min(len(speech), len(piece))
            piece[:n] = speech[:n]
            out.writeframes(piece.tobytes())
            written += len(piece)
    return total / 16_000


def peak_kb() -> int:
    """This process's peak RSS (VmHWM) since the last reset_peak()."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # Linux: the peak RSS starts again from the current RSS


def peak_memory(contender: str, audio: Path, home: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "memory", contender, str(audio), str(home)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _memory(contender: str, audio: Path, home: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="caixa-bench-transcribe-") as tmp:
        root = Path(tmp)
        warm = root / "warm.wav"
        speech_clip.speak(warm, speech_clip.PARAGRAPHS[:1])
        model = plain_model(home) if contender == "plain" else None
        if model is not None:
            plain(model, warm)
        else:
            step(root, home, "warm", warm)  # loads the model and the VAD
        reset_peak()
        before = peak_kb()
        seconds, _ = plain(model, audio) if model is not None else step(root, home, "long", audio)
        growth = (peak_kb() - before) / 1024
    print(json.dumps({"growth_mb": round(growth, 1), "seconds": round(seconds, 1)}))


def main(dense: bool) -> None:
    from rapidfuzz.distance import Levenshtein

    contenders = ["plain", "step"]
    best = dict.fromkeys(contenders, float("inf"))
    texts: dict[str, str] = {}
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="caixa-bench-transcribe-") as tmp:
        root = Path(tmp)
        home = root / "home"
        talk = root / "talk.wav"
        said = speech_clip.speak(talk)
        duration = said[-1][1] + speech_clip.PAUSE
        model = plain_model(home)
        # models load once per process, as in the daemon, outside the timed part
        plain(model, talk)
        step(root, home, "warm-up", talk)
        for r in range(ROUNDS):
            for name in contenders[r % 2 :] + contenders[: r % 2]:
                if name == "plain":
                    seconds, texts[name] = plain(model, talk)
                else:
                    seconds, texts[name] = step(root, home, f"step-{r}", talk)
                best[name] = min(best[name], seconds / duration)
        long = root / "long.wav"
        long_seconds = long_recording(talk, long, dense)
        memory = {name: peak_memory(name, long, home) for name in contenders}
    same = Levenshtein.distance(texts["plain"].split(), texts["step"].split())
    vs_plain = ratio(best["plain"], best["step"])
    figures = {
        "audio_seconds": round(duration, 1),
        "model": whisper.PACKAGED,
        "compute_type": "int8",
        "cpus": CPUS,
        "threads": CPUS,
        "rounds": ROUNDS,
        "load_average_at_start": round(load, 2),
        "real_time_factor": {name: round(f, 4) for name, f in best.items()},
        "ratio_to_plain": vs_plain,
        "words_differing_from_plain": same,
        "long_recording": {
            "minutes": round(long_seconds / 60),
            "speech": "back to back" if dense else f"the {duration:.0f} s talk every {EVERY} s",
            "peak_memory_growth_mb": {n: m["growth_mb"] for n, m in memory.items()},
            "seconds": {n: m["seconds"] for n, m in memory.items()},
        },
        "target_met": best["plain"] / best["step"] >= TARGET,
    }
    print(
        f"transcribe: {duration:.0f} s of English speech, {whisper.PACKAGED} int8, {CPUS} CPUs, "
        f"best of {ROUNDS} interleaved rounds (load average {load:.2f})"
    )
    for name, label in [("step", "transcribe step"), ("plain", "plain WhisperModel.transcribe")]:
        print(f"  {label}: real-time factor {best[name]:.4f} ({1 / best[name]:.1f}x real time)")
    print(f"  ratio step/plain {vs_plain}x (target >= {TARGET}x); words differing: {same}")
    long_figures = figures["long_recording"]
    print(
        f"  {long_figures['minutes']}-minute recording ({long_figures['speech']}), peak memory "
        f"added: step {memory['step']['growth_mb']:.0f} MB, "
        f"plain {memory['plain']['growth_mb']:.0f} MB"
    )
    print(f"  target step >= {TARGET}x plain: {'MET' if figures['target_met'] else 'NOT MET'}")
    save("transcribe", figures)


if __name__ == "__main__":
    if sys.argv[1:2] == ["memory"]:
        _memory(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        main(dense="--dense" in sys.argv[1:])
