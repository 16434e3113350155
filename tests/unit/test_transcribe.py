"""The transcribe step's parts without a daemon: the packaged model joined and checked, audio
decoded in blocks cut at quiet moments, the transcript's files written as segments come, and
bad params refused."""

from __future__ import annotations

import hashlib
import json
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from caixa.errors import InputError, StepError
from caixa.pipelines.base import StepInput
from caixa.pipelines.common.timecode import clock, stamp
from caixa.pipelines.transcribe import media, whisper
from caixa.pipelines.transcribe.step import TranscribeParams, TranscribeStep
from caixa.pipelines.transcribe.writers import Segment, Transcript, paragraph_starts
from tests import speech_clip


def test_times_read_as_people_and_subtitles_write_them() -> None:
    assert [clock(0), clock(59.9), clock(192.7), clock(3792)] == [
        "00:00", "00:59", "03:12", "1:03:12",
    ]  # fmt: skip
    assert stamp(3792.5, ",") == "01:03:12,500" and stamp(0.0004, ".") == "00:00:00.000"


def test_the_packaged_model_is_joined_once_checked_and_kept(tmp_path: Path) -> None:
    folder = whisper.assemble(tmp_path)
    assert folder == tmp_path / "models" / "whisper-base"
    model = folder / "model.bin"
    assert model.stat().st_size == whisper.MODEL_SIZE
    with model.open("rb") as f:
        assert hashlib.file_digest(f, "sha256").hexdigest() == whisper.MODEL_SHA256
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "model.bin", "tokenizer.json", "vocabulary.txt",
    ]  # fmt: skip
    joined_at = model.stat().st_mtime_ns
    assert whisper.assemble(tmp_path) == folder and model.stat().st_mtime_ns == joined_at
    assert TranscribeStep.model_of(TranscribeParams()) == "whisper-base"


def test_a_damaged_install_of_the_model_is_refused_and_nothing_half_made_is_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packages = tmp_path / "site"
    for n, package in enumerate(whisper.PARTS, 1):
        data = packages / package / "data"
        data.mkdir(parents=True)
        (packages / package / "__init__.py").write_text("")
        (data / f"model.bin.part{n}").write_bytes(b"\0" * 1000)  # cut short
        for name in whisper.FILES:
            (data / name).write_text("{}")
    monkeypatch.syspath_prepend(str(packages))
    for package in whisper.PARTS:
        sys.modules.pop(package, None)
    home = tmp_path / "home"
    with pytest.raises(StepError, match=r"does not join into the expected file \(2,000 bytes"):
        whisper.assemble(home)
    assert list((home / "models").iterdir()) == []


def test_a_folder_that_is_not_a_whisper_model_is_refused_when_the_rules_load(
    tmp_path: Path,
) -> None:
    with pytest.raises(ValueError, match=r"not a faster-whisper model folder \(no model.bin"):
        TranscribeParams.model_validate({"model": str(tmp_path)})
    with pytest.raises(ValueError, match="task"):
        TranscribeParams.model_validate({"task": "summarize"})
    assert TranscribeParams.model_validate({"language": "PT"}).language == "pt"


def tones(target: Path, pattern: list[tuple[float, float]], rate: int = 22_050) -> None:
    """A WAV of (seconds, loudness) pieces: a 440 Hz tone, or silence at loudness 0."""
    pieces = []
    for seconds, loudness in pattern:
        t = np.arange(round(seconds * rate)) / rate
        pieces.append((loudness * 12_000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))
    with wave.open(str(target), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.concatenate(pieces).tobytes())


def test_audio_comes_in_blocks_cut_at_quiet_moments_and_nothing_is_lost(tmp_path: Path) -> None:
    from faster_whisper.audio import decode_audio

    wav = tmp_path / "tones.wav"
    tones(wav, [(6.3, 1), (0.4, 0)] * 6)  # a quiet moment every 6.7 s
    found = media.Decoded()
    blocks = list(media.blocks(wav, "tones.wav", 5.0, found))
    whole = decode_audio(str(wav))
    assert np.array_equal(np.concatenate(blocks), whole)  # what faster-whisper itself decodes
    assert found.samples == len(whole) and not found.damaged
    assert len(blocks) >= 3
    for end in np.cumsum([len(b) for b in blocks])[:-1] / media.RATE:
        assert 6.3 <= end % 6.7 <= 6.7, end  # inside a quiet moment, never in the tone
    probe = media.probe(wav, "tones.wav")
    assert probe.format == "wav" and probe.duration == pytest.approx(40.2, abs=0.01)


def test_what_cannot_be_heard_is_refused_with_the_reason(tmp_path: Path) -> None:
    junk = tmp_path / "memo.ogg"
    junk.write_bytes(b"OggS" + bytes(range(200)) * 5)
    with pytest.raises(InputError, match=r"cannot read memo\.ogg as audio or video"):
        media.probe(junk, "memo.ogg")
    mute = tmp_path / "clip.mp4"
    speech_clip.silent_video(mute)
    with pytest.raises(InputError, match=r"clip\.mp4 is a video with no audio track"):
        media.probe(mute, "clip.mp4")


def test_the_transcript_is_written_as_it_comes_in_paragraphs_at_pauses(tmp_path: Path) -> None:
    said = [
        (0.0, 3.0, "First thing said."),
        (3.0, 6.5, "  Still the first paragraph.  "),
        (6.5, 7.0, "   "),  # nothing said: left out everywhere
        (7.0, 10.0, "After a pause the VAD found."),
        (12.0, 14.0, "After a silence Whisper heard."),
    ]
    with Transcript(tmp_path) as out:
        out.pauses.append(6.8)
        for start, end, text in said:
            out.add(Segment(start, end, text, -0.2, 0.01, 1.2))
    text = out.paths["txt"].read_text()
    assert text == (
        "First thing said. Still the first paragraph.\n\n"
        "After a pause the VAD found.\n\nAfter a silence Whisper heard.\n"
    )
    data = json.loads(out.paths["json"].read_text())
    assert [s["paragraph"] for s in data["segments"]] == [1, 1, 2, 3]
    assert paragraph_starts(out.paths["json"]) == [0.0, 7.0, 12.0]
    srt = out.paths["srt"].read_text()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:03,000\nFirst thing said.\n\n2\n")
    assert srt.count(" --> ") == 4
    assert out.paths["vtt"].read_text().count("\n00:00:12.000 --> 00:00:14.000\n") == 1


def test_a_recording_says_how_far_it_is_heard(tmp_path: Path) -> None:
    note = tmp_path / "note.wav"
    speech_clip.speak(note, speech_clip.PARAGRAPHS[:2], pause=0.5)
    (tmp_path / "work").mkdir()
    heard: list[float] = []
    job = StepInput(
        job_id="job-note",
        rule="voice",
        source=note,
        source_name="note.wav",
        media_type="audio/wav",
        artifacts=(),
        workdir=tmp_path / "work",
        home=tmp_path / "home",
        progress=heard.append,
    )
    TranscribeStep().run(job, TranscribeParams())
    assert len(heard) >= 2, heard  # one per segment: the daemon keeps one a second
    assert heard == sorted(heard) and 0 < heard[0] < heard[-1] <= 1.0, heard
    assert heard[-1] > 0.8, heard  # the last segment ends near the end of the recording
