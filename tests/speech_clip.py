"""Real English speech to transcribe, spoken by the packaged Piper voice (en_US-joe-medium), and
the same speech in other containers made with PyAV: no recording is committed to the repo.

`python -m tests.speech_clip DEST.wav [PARAGRAPHS]` writes a clip (the demo's voice memo).
"""

from __future__ import annotations

import sys
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np

VOICE = "en_US-joe-medium"
PAUSE = 2.0  # seconds of silence between paragraphs: where the transcript starts a new one
# Words Whisper writes one way only: no digits, hyphens, contractions or names it could spell
# otherwise, so the word error rate measures hearing, not spelling.
PARAGRAPHS = [
    "The library opened a new reading room on the second floor last week. Students arrive "
    "early because of the rain, and the librarian lends them umbrellas. The room is quiet, "
    "bright and warm, and it closes at nine in the evening.",
    "The monthly rent is paid by bank transfer before the tenth day of each month. A deposit "
    "of two months is returned when the tenant leaves the flat in good order. The landlord "
    "repairs the boiler and the windows, and the tenant pays for water and electricity.",
    "The council meeting was moved to the first Tuesday of next month. Fresh bread, milk and "
    "fruit are sold at the market on Saturday mornings. The train to the coast leaves every "
    "hour from the main station, and the last one leaves at midnight.",
    "Please keep this receipt until the repair has been finished and checked. The garden behind "
    "the school is full of roses in the spring. Our neighbours walk their dog along the river "
    "every morning before breakfast.",
    "The museum shows old maps of the harbour and paintings of fishing boats. Children can draw "
    "their own map of the town in the workshop on the ground floor. Entry is free on the first "
    "Sunday of every month.",
]


def speak(
    target: Path, paragraphs: list[str] = PARAGRAPHS, pause: float = PAUSE
) -> list[tuple[float, float]]:
    """A mono 16-bit WAV of the paragraphs, a pause after each; when each is said (seconds)."""
    from piper import PiperVoice, SynthesisConfig

    from caixa import models

    path = models.locate(VOICE)
    voice = PiperVoice.load(path, config_path=f"{path}.json")
    # Piper adds random noise to each phoneme's length and to the sound: the same text said
    # twice differs, and so, now and then, did where Whisper cut its segments. Without it, a
    # clip is the same every run.
    steady = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    rate = voice.config.sample_rate
    frames = 0
    said = []
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        for paragraph in paragraphs:
            start = frames / rate
            for chunk in voice.synthesize(paragraph, steady):
                out.writeframes(chunk.audio_int16_bytes)
                frames += len(chunk.audio_int16_bytes) // 2
            said.append((start, frames / rate))
            silence = np.zeros(round(pause * rate), dtype=np.int16)
            out.writeframes(silence.tobytes())
            frames += len(silence)
    return said


def samples(wav: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(wav)) as src:
        return np.frombuffer(src.readframes(src.getnframes()), dtype="<i2"), src.getframerate()


def encode(
    wav: Path,
    target: Path,
    codec: str,
    rate: int,
    *,
    video: bool = False,
    bitrate: int = 96_000,
    faststart: bool = False,
) -> None:
    """The WAV's speech re-encoded into `target` (its container from the suffix) with an audio
    `codec` at `rate` Hz; with `video`, beside a small moving picture (mpeg4), as a phone's
    video has its sound; with `faststart`, an MP4's index first (so a cut file still says how
    long it was)."""
    import av

    audio, source_rate = samples(wav)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(target), "w", options=options) as out:
        sound = out.add_stream(codec, rate=rate, layout="mono")
        sound.bit_rate = bitrate
        picture = _picture(out) if video else None
        resampler = av.AudioResampler(format=sound.format.name, layout="mono", rate=rate)
        step = source_rate  # one second per frame fed to the encoder
        for n, at in enumerate(range(0, len(audio), step)):
            frame = av.AudioFrame.from_ndarray(
                audio[at : at + step].reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate = source_rate
            frame.time_base = Fraction(1, source_rate)
            frame.pts = at
            for done in resampler.resample(frame):
                out.mux(sound.encode(done))
            if picture is not None:
                out.mux(picture.encode(_image(picture, n)))
        for done in resampler.resample(None):
            out.mux(sound.encode(done))
        out.mux(sound.encode(None))
        if picture is not None:
            out.mux(picture.encode(None))


def silent_video(target: Path, seconds: int = 3) -> None:
    """A video with a picture and no audio track at all."""
    import av

    with av.open(str(target), "w") as out:
        picture = _picture(out)
        for n in range(seconds):
            out.mux(picture.encode(_image(picture, n)))
        out.mux(picture.encode(None))


def _picture(out: object) -> object:
    stream = out.add_stream("mpeg4", rate=1)  # type: ignore[attr-defined]
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    return stream


def _image(stream: object, n: int) -> object:
    import av

    pixels = np.full((48, 64, 3), (n * 40) % 256, dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
    frame.pts = n
    return frame


if __name__ == "__main__":
    count = int(sys.argv[2]) if len(sys.argv) > 2 else len(PARAGRAPHS)
    said = speak(Path(sys.argv[1]), PARAGRAPHS[:count])
    print(f"{sys.argv[1]}: {said[-1][1]:.1f} s of English speech ({VOICE})")
