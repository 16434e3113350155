"""Audio from any file FFmpeg reads, through PyAV, whose wheels carry FFmpeg's own libraries
(no system codec): wav, mp3, m4a/aac, ogg/opus, flac, and the audio track of mp4, mkv, mov and
webm videos. The format is found from the content, never from the file's name.

The audio comes out as Whisper hears it (mono, 16 kHz, 16-bit samples as float32, resampled as
faster-whisper's own `decode_audio` does, so the step hears what a plain call would) in blocks
of a few minutes: a two-hour recording never sits in memory whole. Each block ends at the
quietest moment near its end, so a word is not cut in two between blocks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caixa.errors import InputError

MODULE = "av"
RATE = 16_000  # samples per second: what Whisper hears
QUIET_WINDOW = 0.1  # seconds: the loudness of a block's possible ends is measured this finely
QUIET_SEARCH = 10.0  # seconds before a block's end where the quietest moment is looked for


@dataclass(frozen=True)
class Probe:
    """What the container says of itself before anything is decoded."""

    format: str  # FFmpeg's name for it: "wav", "mov,mp4,m4a,3gp,3g2,mj2", "ogg"...
    codec: str  # of the audio track
    duration: float | None  # seconds, from the header; None when it does not say
    video: bool  # it also has a picture track


@dataclass
class Decoded:
    """What decoding found, for the manifest: how much audio, and what was damaged."""

    samples: int = 0
    damaged: bool = False  # decoding stopped at data FFmpeg could not read

    @property
    def seconds(self) -> float:
        return self.samples / RATE


def probe(path: Path, name: str) -> Probe:
    """The container and its audio track, or InputError saying why there is nothing to hear."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                kind = "a video with no audio track" if container.streams.video else "no audio"
                raise InputError(
                    f"{name} is {kind}: there is nothing to transcribe (a video needs its sound)"
                )
            stream = container.streams.audio[0]
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            return Probe(
                container.format.name, stream.codec_context.name, duration,
                bool(container.streams.video),
            )  # fmt: skip
    except av.FFmpegError as exc:
        raise InputError(
            f"cannot read {name} as audio or video ({_reason(exc)}): it is damaged, cut short, "
            "or not a recording; send the whole file again"
        ) from exc


def blocks(path: Path, name: str, seconds: float, found: Decoded) -> Iterator[np.ndarray]:
    """The audio in blocks of about `seconds`, each cut at its quietest moment near the end;
    `found` counts what was decoded as it goes."""
    import av

    size = round(seconds * RATE)
    enough = size + round(QUIET_SEARCH * RATE)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    pending: list[np.ndarray] = []
    held = 0
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            frames = _valid(container.decode(container.streams.audio[0]), found)
            for frame in itertools.chain(frames, [None]):
                if frame is not None:
                    frame.pts = None  # damaged files jump in time; the samples are what count
                for out in resampler.resample(frame):
                    pending.append(out.to_ndarray().reshape(-1))
                    held += len(pending[-1])
                if held >= enough:
                    audio = np.concatenate(pending)
                    cut = quiet_cut(audio, size)
                    found.samples += cut
                    yield audio[:cut].astype(np.float32) / 32768.0
                    pending, held = [audio[cut:]], len(audio) - cut
    except av.FFmpegError as exc:
        raise InputError(f"cannot decode {name} ({_reason(exc)}): the file is damaged") from exc
    if held:
        found.samples += held
        yield np.concatenate(pending).astype(np.float32) / 32768.0


def quiet_cut(samples: np.ndarray, size: int) -> int:
    """Where to end a block of about `size` samples: the quietest window in the QUIET_SEARCH
    seconds around `size`."""
    window = round(QUIET_WINDOW * RATE)
    start = max(0, size - round(QUIET_SEARCH * RATE / 2))
    span = samples[start : start + round(QUIET_SEARCH * RATE)].astype(np.float32)
    count = len(span) // window
    if count < 2:
        return size
    energy = np.square(span[: count * window]).reshape(count, window).mean(axis=1)
    return start + int(np.argmin(energy)) * window + window // 2


def _valid(frames: Iterator[object], found: Decoded) -> Iterator[object]:
    """The frames up to the first one FFmpeg cannot decode (where decoding stops, as in
    faster-whisper's own `decode_audio`), which is noted."""
    import av

    try:
        yield from frames
    except av.InvalidDataError:
        found.damaged = True


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)
