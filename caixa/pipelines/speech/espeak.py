"""Debian's espeak-ng program: a robotic but real voice for every language without a Piper one.

One process per piece of text (~13 ms to start here), the text on stdin (a piece that starts
with "-" is not read as an option), its WAV written to a scratch file and read back.
"""

from __future__ import annotations

import subprocess
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from caixa.errors import StepError
from caixa.pipelines.speech.audio import Chunk

PROGRAM = "espeak-ng"
PREFIX = "espeak-ng:"  # a rule's `voices: {pt: "espeak-ng:pt"}` picks an espeak-ng voice
# ISO 639-1 -> espeak-ng voice where the code alone picks another accent (en: British, pt:
# European); espeak-ng knows the other common codes (de, es, fr, it, nl, ru, zh...) as they are.
VOICES = {"en": "en-us", "pt": "pt-br"}
NORMAL_WPM = 175  # espeak-ng's own default pace, words per minute
TIMEOUT_S = 120  # one piece of at most a few dozen words


class EspeakError(StepError):
    """espeak-ng is missing, has no such voice, or failed on a piece of text."""


def voice_for(language: str) -> str:
    return VOICES.get(language, language)


def speak(text: str, voice: str, speed: float, scratch: Path) -> Iterator[Chunk]:
    """The audio of `text` in `voice`, at `speed` times espeak-ng's normal pace."""
    command = [PROGRAM, "-v", voice, "-s", str(round(NORMAL_WPM * speed)), "-b", "1"]
    try:
        done = subprocess.run(
            [*command, "-w", str(scratch), "--stdin"],
            input=text.encode("utf-8"),
            capture_output=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise EspeakError("espeak-ng is not installed; install the espeak-ng package") from exc
    except subprocess.TimeoutExpired as exc:
        raise EspeakError(f"espeak-ng took more than {TIMEOUT_S} s on one sentence") from exc
    detail = " ".join(done.stderr.decode("utf-8", "replace").split())[-300:]
    if "voice does not exist" in detail:
        raise EspeakError(
            f"espeak-ng has no voice {voice!r} (see `espeak-ng --voices`); give this language "
            "a Piper voice in the rule's `voices`, or an espeak-ng one as 'espeak-ng:NAME'"
        )
    if done.returncode != 0:
        raise EspeakError(f"espeak-ng failed: {detail or f'exit status {done.returncode}'}")
    with wave.open(str(scratch), "rb") as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        yield Chunk(samples, wav.getframerate())
