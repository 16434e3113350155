"""Speech synthesis speed: the real-time factor (synthesis seconds per second of audio; lower is
faster) of the tts step (language detection, caixa's sentence splitting, Piper piece by piece,
the WAV appended as it is made) against a plain `PiperVoice.load` + `synthesize_wav` of the
same English text into a WAV, in the same run, with the packaged en_US-joe-medium voice.

The step runs with `sentence_silence: 0`, so both make the same audio (the pauses it adds by
default would lengthen the audio for free and flatter its factor). Both run on every core this
process may use (caixa's default; in the daemon, the accelerator lane's share). Each contender runs
ROUNDS short rounds (two paragraphs, ~20 s of audio), interleaved, in a rotating order; its
best round counts, since other work on a shared machine can only slow a round down, and short
rounds give more chances of a quiet moment. Also shown: the peak memory each adds to speak one
120-word run-on sentence (a fresh process each, peak RSS reset after loading), the reason the
step cuts long sentences into pieces.

Target: step >= 0.9x the plain call (the plain factor divided by the step's).
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
from typing import TYPE_CHECKING

from _common import ratio, save

from caixa import models
from caixa.pipelines.base import StepInput
from caixa.pipelines.common.threads import available
from caixa.pipelines.speech.step import TtsParams, TtsStep

if TYPE_CHECKING:
    from piper import PiperVoice

ROUNDS = 10
TARGET = 0.9
CPUS = len(os.sched_getaffinity(0))
VOICE = "en_US-joe-medium"
SENTENCES = [
    "The library opened a new reading room on the second floor last week.",
    "Students arrive early because of the rain, and the librarian lends them umbrellas.",
    "The monthly rent is paid by bank transfer before the tenth day of each month.",
    "A deposit of two months is returned when the tenant leaves the flat in good order.",
    "The council meeting was moved to the first Tuesday of next month.",
    "Fresh bread, milk and fruit are sold at the market on Saturday mornings.",
    "The train to the coast leaves every hour from the main station.",
    "Please keep this receipt until the repair has been finished and checked.",
]
PARAGRAPH = 4  # sentences per paragraph
RUN_ON = " ".join(["the rain kept falling on the old roofs of the town and"] * 10) + " stopped."


def text(round_: int) -> str:
    """Eight sentences (about 130 words) in two paragraphs, as a note has them."""
    items = [f"In part {round_}, {s[0].lower()}{s[1:]}" for s in SENTENCES]
    return "\n\n".join(" ".join(items[i : i + PARAGRAPH]) for i in range(0, len(items), PARAGRAPH))


def load_plain() -> PiperVoice:
    from piper import PiperVoice

    path = models.locate(VOICE)
    return PiperVoice.load(path, config_path=f"{path}.json")


def plain(voice: PiperVoice, words: str, target: Path) -> tuple[float, float]:
    """Synthesis seconds and audio seconds of one plain `synthesize_wav` call."""
    start = time.perf_counter()
    with wave.open(str(target), "wb") as wav:
        voice.synthesize_wav(words, wav)
    seconds = time.perf_counter() - start
    with wave.open(str(target)) as wav:
        return seconds, wav.getnframes() / wav.getframerate()


def step(root: Path, name: str, words: str) -> tuple[float, float]:
    work = root / name
    work.mkdir()
    source = work / "note.txt"
    source.write_text(words, encoding="utf-8")
    job = StepInput("bench", "bench", source, source.name, "text/plain", (), work, work)
    start = time.perf_counter()
    result = TtsStep().run(job, TtsParams(sentence_silence=0))
    return time.perf_counter() - start, result.data["duration_seconds"]


def peak_kb() -> int:
    """This process's peak RSS (VmHWM) since the last reset_peak()."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # Linux: the peak RSS starts again from the current RSS


def peak_memory(contender: str) -> float:
    """MB of peak RSS that speaking RUN_ON adds, in a fresh process."""
    done = subprocess.run(
        [sys.executable, __file__, "memory", contender], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)["growth_mb"]


def _memory(contender: str) -> None:
    with tempfile.TemporaryDirectory(prefix="caixa-bench-tts-") as tmp:
        root = Path(tmp)
        voice = load_plain() if contender == "plain" else None
        if voice is not None:
            plain(voice, "The rain stopped.", root / "warm.wav")
        else:
            step(root, "warm", "The rain stopped.")  # loads the voice and the detector
        reset_peak()
        before = peak_kb()
        if voice is not None:
            plain(voice, RUN_ON, root / "long.wav")
        else:
            step(root, "long", RUN_ON)
        growth = (peak_kb() - before) / 1024
    print(json.dumps({"growth_mb": round(growth, 1)}))


def main() -> None:
    count = len(text(1).split())
    contenders = ["plain", "step"]
    best = dict.fromkeys(contenders, float("inf"))  # real-time factor
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="caixa-bench-tts-") as tmp:
        root = Path(tmp)
        voice = load_plain()
        # models load once per process, as in the daemon, outside the timed part
        plain(voice, "Good morning.", root / "warm.wav")
        step(root, "warm-up", "Good morning.")
        for r in range(ROUNDS):
            words = text(r + 1)
            for name in contenders[r % 2 :] + contenders[: r % 2]:
                if name == "plain":
                    seconds, heard = plain(voice, words, root / f"plain-{r}.wav")
                else:
                    seconds, heard = step(root, f"{name}-{r}", words)
                best[name] = min(best[name], seconds / heard)
    memory = {name: peak_memory(name) for name in ("plain", "step")}
    vs_plain = ratio(best["plain"], best["step"])
    figures = {
        "words": count,
        "voice": VOICE,
        "cpus": CPUS,
        "step_threads": available(),
        "rounds": ROUNDS,
        "load_average_at_start": round(load, 2),
        "real_time_factor": {name: round(f, 4) for name, f in best.items()},
        "times_real_time": {name: round(1 / f, 1) for name, f in best.items()},
        "ratio_to_plain": vs_plain,
        "run_on_sentence_words": len(RUN_ON.split()),
        "run_on_peak_memory_growth_mb": memory,
        "target_met": best["plain"] / best["step"] >= TARGET,
    }
    print(
        f"tts: {count} English words in {len(SENTENCES)} sentences, {VOICE}, {CPUS} CPUs, "
        f"best of {ROUNDS} interleaved rounds (load average {load:.2f})"
    )
    for name, label in [
        ("step", f"tts step, {available()} ONNX threads (default)"),
        ("plain", "plain PiperVoice.synthesize_wav"),
    ]:
        factor = best[name]
        print(f"  {label}: real-time factor {factor:.4f} ({1 / factor:.1f}x real time)")
    print(f"  ratio step/plain {vs_plain}x (target >= {TARGET}x)")
    print(
        f"  one {figures['run_on_sentence_words']}-word run-on sentence, peak memory added: "
        f"step {memory['step']:.0f} MB, plain {memory['plain']:.0f} MB"
    )
    print(f"  target step >= {TARGET}x plain: {'MET' if figures['target_met'] else 'NOT MET'}")
    save("tts", figures)


if __name__ == "__main__":
    if sys.argv[1:2] == ["memory"]:
        _memory(sys.argv[2])
    else:
        main()
