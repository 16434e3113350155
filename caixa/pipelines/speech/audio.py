"""Speech written as it is made: one WAV appended piece by piece, and a compressed copy.

Nothing holds more than one piece of audio, so a book-length text takes the memory of one
sentence. The compressed copy comes from soundfile, whose wheel bundles libsndfile with Vorbis
and MP3 (LAME) encoders: no system codec, no ffmpeg. Opus is left out: libsndfile encodes it
only at 8, 12, 16, 24 or 48 kHz, and Piper and espeak-ng voices speak at 22.05 kHz.
"""

from __future__ import annotations

import wave
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import soundfile

MODULE = "soundfile"
# name -> (libsndfile format, subtype, file suffix, media type)
CODECS = {
    "ogg": ("OGG", "VORBIS", ".ogg", "audio/ogg"),
    "mp3": ("MP3", "MPEG_LAYER_III", ".mp3", "audio/mpeg"),
}
WAV_MEDIA_TYPE = "audio/wav"


class Chunk(NamedTuple):
    """Mono 16-bit samples and their rate: what a voice makes of one piece of text."""

    samples: np.ndarray
    rate: int


class AudioWriter:
    """A mono 16-bit WAV, plus a copy in `codec` when given, opened at the first chunk (its
    rate is the voice's) and closed by the `with` block."""

    def __init__(self, wav: Path, codec: str | None = None) -> None:
        self.wav = wav
        self.codec = codec
        self.frames = 0
        self.rate = 0
        self._wav: wave.Wave_write | None = None
        self._copy: soundfile.SoundFile | None = None

    @property
    def copy(self) -> Path | None:
        return self.wav.with_suffix(CODECS[self.codec][2]) if self.codec else None

    @property
    def seconds(self) -> float:
        return self.frames / self.rate if self.rate else 0.0

    def write(self, chunk: Chunk, pause: float = 0.0) -> None:
        """Append a chunk, after `pause` seconds of silence unless it is the first."""
        if self._wav is None:
            self._open(chunk.rate)
        elif chunk.rate != self.rate:
            raise ValueError(f"a voice changed its rate from {self.rate} to {chunk.rate} Hz")
        if self.frames and pause > 0:
            self._append(np.zeros(round(pause * self.rate), dtype=np.int16))
        self._append(chunk.samples.astype(np.int16, copy=False))

    def _open(self, rate: int) -> None:
        self.rate = rate
        self._wav = wave.open(str(self.wav), "wb")  # noqa: SIM115 (closed by __exit__)
        self._wav.setnchannels(1)
        self._wav.setsampwidth(2)
        self._wav.setframerate(rate)
        if self.codec:
            import soundfile

            kind, subtype, _, _ = CODECS[self.codec]
            self._copy = soundfile.SoundFile(
                self.copy, "w", samplerate=rate, channels=1, format=kind, subtype=subtype
            )

    def _append(self, samples: np.ndarray) -> None:
        assert self._wav is not None
        self._wav.writeframes(samples.tobytes())
        if self._copy is not None:
            self._copy.write(samples)
        self.frames += len(samples)

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for out in (self._wav, self._copy):
            if out is not None:
                out.close()
