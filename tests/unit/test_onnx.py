"""A model's optimised graph kept in the home: the packaged Piper voice opened from its copy
speaks the same samples as from its own file, and a damaged copy is made again."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from caixa import models
from caixa.pipelines.common import onnx

VOICE = "en_US-joe-medium"
# a sentence's phoneme ids for the voice, and its scales with no noise: the same audio each run
PHONEMES = np.array([[1, 0, 41, 0, 120, 0, 61, 0, 3, 0, 33, 0, 14, 0, 59, 0, 74, 0, 2]])
SCALES = np.array([0.0, 1.0, 0.0], dtype=np.float32)


def options() -> ort.SessionOptions:
    made = ort.SessionOptions()
    made.intra_op_num_threads = 1
    return made


def speech(session: ort.InferenceSession) -> np.ndarray:
    inputs = {"input": PHONEMES, "input_lengths": np.array([PHONEMES.shape[1]]), "scales": SCALES}
    return session.run(None, inputs)[0]


@pytest.fixture(scope="module")
def voice() -> Path:
    return models.locate(VOICE)


@pytest.fixture(scope="module")
def plain(voice: Path) -> np.ndarray:
    audio = speech(onnx.session(voice, options(), [onnx.CPU], home=None))
    assert audio.size > 2_000 and np.abs(audio).max() > 0.05  # a sound, not silence
    return audio


def copies(home: Path) -> list[Path]:
    return sorted((home / "models" / onnx.FOLDER).rglob("*"))


def test_the_first_session_keeps_the_graph_and_the_next_opens_it(
    tmp_path: Path, voice: Path, plain: np.ndarray
) -> None:
    first = onnx.session(voice, options(), [onnx.CPU], tmp_path)
    (folder, copy) = copies(tmp_path)
    assert folder.is_dir() and copy.suffix == ".onnx" and copy.stat().st_mode & 0o777 == 0o644
    again = onnx.session(voice, options(), [onnx.CPU], tmp_path)
    assert again._model_path == str(copy)  # the file the session opened
    assert np.array_equal(speech(first), plain) and np.array_equal(speech(again), plain)
    assert copies(tmp_path) == [folder, copy]


def test_a_damaged_copy_is_made_again_and_an_older_one_removed(
    tmp_path: Path, voice: Path, plain: np.ndarray
) -> None:
    onnx.session(voice, options(), [onnx.CPU], tmp_path)
    (folder, copy) = copies(tmp_path)
    whole = copy.read_bytes()
    copy.write_bytes(whole[: len(whole) // 2])  # a crash while it was written
    older = folder / f"{voice.stem}-0123456789abcdef.onnx"  # another onnxruntime's copy
    older.write_bytes(b"old")
    assert np.array_equal(speech(onnx.session(voice, options(), [onnx.CPU], tmp_path)), plain)
    assert copies(tmp_path) == [folder, copy] and copy.read_bytes() == whole


def test_no_copy_where_the_home_cannot_be_written(
    tmp_path: Path, voice: Path, plain: np.ndarray
) -> None:
    (tmp_path / "models").write_text("a file where the folder would be")
    assert np.array_equal(speech(onnx.session(voice, options(), [onnx.CPU], tmp_path)), plain)
