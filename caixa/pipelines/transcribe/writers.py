"""A transcript written as Whisper hears it: the text, SRT and WebVTT subtitles and the
segments' JSON grow segment by segment, so a two-hour recording takes the memory of one.

The text has a paragraph wherever the speaker paused (or a paragraph grew long), and the
segments' JSON lists where each paragraph starts and ends. Those paragraphs are the marks a
time is read from: the translate step keeps a text's paragraphs one for one, so the index step
finds the time of a chunk of the transcript, or of its translation, by the paragraph it
starts in.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, TextIO

from caixa.pipelines.common.timecode import stamp

PAUSE = 1.0  # seconds between two segments (with no VAD, Whisper hears the silence) that part
# paragraphs; with the VAD, Whisper hears the speech joined, and the VAD's pauses part them.
TOLERANCE = 0.5  # seconds a segment's start may come before the end of the pause it follows
# A paragraph this long also ends where a sentence does, and at LONGEST whatever comes: a
# search hit's time is its paragraph's.
LONG = 30.0
LONGEST = 90.0
SENTENCE_END = (".", "!", "?", "…")


@dataclass(frozen=True)
class Segment:
    start: float  # seconds from the start of the recording
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    compression_ratio: float
    words: list[dict[str, Any]] | None = None  # {start, end, word, probability}, when asked


class Transcript:
    """The four files, in `folder`, open for the `with` block."""

    NAMES: ClassVar[dict[str, str]] = {"txt": "transcript.txt", "srt": "transcript.srt",
                                       "vtt": "transcript.vtt", "json": "segments.json"}  # fmt: skip

    def __init__(self, folder: Path) -> None:
        self.paths = {kind: folder / name for kind, name in self.NAMES.items()}
        self.count = 0
        self.words = 0
        self.paragraphs: list[dict[str, float]] = []  # start and end of each
        self.pauses: list[float] = []  # seconds, in order: the middle of each pause the VAD found
        self._files: dict[str, TextIO] = {}
        self._last_end = 0.0
        self._last_start = 0.0
        self._sentence_ended = False

    def __enter__(self) -> Transcript:
        self._files = {k: p.open("w", encoding="utf-8") for k, p in self.paths.items()}
        self._files["vtt"].write("WEBVTT\n")
        self._files["json"].write('{\n  "segments": [')
        return self

    def add(self, segment: Segment) -> None:
        """Append a segment to every file; one with no words is left out."""
        text = " ".join(segment.text.replace("\f", " ").split())
        if not text:
            return
        txt, srt, vtt = self._files["txt"], self._files["srt"], self._files["vtt"]
        paragraph = self.paragraphs[-1] if self.paragraphs else None
        if paragraph is None or self._breaks(paragraph, segment.start):
            if paragraph is not None:
                txt.write("\n\n")
            paragraph = {"start": round(segment.start, 3), "end": round(segment.end, 3)}
            self.paragraphs.append(paragraph)
        else:
            txt.write(" ")
        paragraph["end"] = round(segment.end, 3)
        txt.write(text)
        self.count += 1
        self.words += len(text.split())
        self._last_end = segment.end
        self._last_start = segment.start
        self._sentence_ended = text.endswith(SENTENCE_END)
        srt.write(f"{self.count}\n{stamp(segment.start, ',')} --> {stamp(segment.end, ',')}\n")
        srt.write(f"{text}\n\n")
        vtt.write(f"\n{stamp(segment.start, '.')} --> {stamp(segment.end, '.')}\n{text}\n")
        entry: dict[str, Any] = {
            "id": self.count,
            "start": round(segment.start, 3),
            "end": round(segment.end, 3),
            "text": text,
            "paragraph": len(self.paragraphs),
            "avg_logprob": round(segment.avg_logprob, 4),
            "no_speech_prob": round(segment.no_speech_prob, 4),
            "compression_ratio": round(segment.compression_ratio, 4),
        }
        if segment.words is not None:
            entry["words"] = segment.words
        comma = "," if self.count > 1 else ""
        self._files["json"].write(f"{comma}\n    {json.dumps(entry, ensure_ascii=False)}")

    def _breaks(self, paragraph: dict[str, float], start: float) -> bool:
        """Whether a segment starting at `start` begins a new paragraph."""
        span = start - paragraph["start"]
        after = bisect.bisect_right(self.pauses, self._last_start)
        paused = after < len(self.pauses) and self.pauses[after] <= start + TOLERANCE
        return (
            paused
            or start - self._last_end >= PAUSE
            or (span >= LONG and self._sentence_ended)
            or span >= LONGEST
        )

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.count:
            self._files["txt"].write("\n")
        paragraphs = json.dumps(self.paragraphs)
        self._files["json"].write(f'\n  ],\n  "paragraphs": {paragraphs}\n}}\n')
        for out in self._files.values():
            out.close()


def paragraph_starts(segments_json: Path) -> list[float]:
    """Where each paragraph of a transcript starts, in seconds, from its segments' JSON."""
    data = json.loads(segments_json.read_text(encoding="utf-8"))
    return [float(p["start"]) for p in data.get("paragraphs", [])]
