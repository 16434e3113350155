"""Debian's espeak-ng program: a robotic but real voice for every language without a Piper one.

One process per piece of text (~13 ms to start here), the text on stdin (a piece that starts
with "-" is not read as an option), its WAV written to a scratch file and read back.
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from caixa.pipelines.common.programs import Program, ProgramError
from caixa.pipelines.speech.audio import Chunk

PREFIX = "espeak-ng:"  # a rule's `voices: {pt: "espeak-ng:pt"}` picks an espeak-ng voice
# ISO 639-1 -> espeak-ng voice where the code alone picks another accent (en: British, pt:
# European); espeak-ng knows the other common codes (de, es, fr, it, nl, ru, zh...) as they are.
VOICES = {"en": "en-us", "pt": "pt-br"}
NORMAL_WPM = 175  # espeak-ng's own default pace, words per minute
TIMEOUT_S = 120  # one piece of at most a few dozen words


class EspeakError(ProgramError):
    """espeak-ng is missing, has no such voice, or failed on a piece of text."""


ESPEAK = Program("espeak-ng", "espeak-ng", error=EspeakError)


def voice_for(language: str) -> str:
    return VOICES.get(language, language)


def speak(text: str, voice: str, speed: float, scratch: Path) -> Iterator[Chunk]:
    """The audio of `text` in `voice`, at `speed` times espeak-ng's normal pace."""
    command = ["-v", voice, "-s", str(round(NORMAL_WPM * speed)), "-b", "1"]
    done = ESPEAK.run(
        [*command, "-w", str(scratch), "--stdin"],
        stdin=text.encode("utf-8"),
        timeout=TIMEOUT_S,
        what="one sentence",
    )
    if b"voice does not exist" in done.stderr:
        raise EspeakError(
            f"espeak-ng has no voice {voice!r} (see `espeak-ng --voices`); give this language "
            "a Piper voice in the rule's `voices`, or an espeak-ng one as 'espeak-ng:NAME'"
        )
    ESPEAK.check(done)
    with wave.open(str(scratch), "rb") as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        yield Chunk(samples, wav.getframerate())
