"""Steps that run several jobs in one call (`run_batch`) give each job what `run` gives it, and
a bad input fails only its own job. Real models (EfficientNet-Lite0, e5, Whisper base), real
photos, speech spoken by Piper."""

from __future__ import annotations

import json
import wave
from dataclasses import replace
from pathlib import Path

import pytest

from caixa import models
from caixa.errors import InputError, StepError
from caixa.pipelines.base import Artifact, StepInput, StepResult
from caixa.pipelines.index.embed import embedder
from caixa.pipelines.index.step import IndexParams, IndexStep
from caixa.pipelines.index.store import Store, index_path
from caixa.pipelines.speech.step import TtsParams, TtsStep
from caixa.pipelines.transcribe.step import TranscribeParams, TranscribeStep
from caixa.pipelines.vision.classify import ClassifyParams, ClassifyStep
from caixa.pipelines.vision.detect import DetectParams, DetectStep
from tests import speech_clip
from tests.documents import job_for
from tests.photos import BUS, ZIDANE

CORPUS = json.loads((Path(__file__).parents[1] / "data" / "bilingual.json").read_text())


def labels(result: StepResult | Exception) -> list[tuple[str, float]]:
    assert isinstance(result, StepResult), result
    return [(x["label"], x["probability"]) for x in result.data["labels"]]


def test_classify_in_a_batch_labels_each_photo_as_alone_and_a_bad_one_fails_alone(
    tmp_path: Path,
) -> None:
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(BUS.read_bytes()[:50_000])  # a copy that stopped halfway
    photos = [BUS, ZIDANE, cut, BUS]
    jobs = [replace(job_for(p, tmp_path / f"batch{i}"), threads=2) for i, p in enumerate(photos)]
    params = ClassifyParams()
    together = ClassifyStep().run_batch(jobs, params)
    alone = [
        ClassifyStep().run(job_for(p, tmp_path / f"alone{i}"), params)
        for i, p in enumerate([BUS, ZIDANE])
    ]

    assert isinstance(together[2], StepError) and "truncated" in str(together[2])
    for i, single in [(0, alone[0]), (1, alone[1]), (3, alone[0])]:
        assert [name for name, _ in labels(together[i])] == [name for name, _ in labels(single)]
        for (_, p), (_, q) in zip(labels(together[i]), labels(single), strict=True):
            assert p == pytest.approx(q, abs=1e-3)
        result = together[i]
        assert isinstance(result, StepResult)
        report = _report(result)
        assert report.parent == jobs[i].workdir  # each job's files in its own folder
        assert json.loads(report.read_text())["image"] == photos[i].name


def test_detect_in_a_batch_finds_each_photos_boxes_as_alone_and_a_bad_one_fails_alone(
    tmp_path: Path,
) -> None:
    """On a CPU with two threads, two photos are looked at side by side, each thread with a
    copy of YOLOv8s of its own, and the model's memory counts both; each photo gets the boxes
    it gets alone."""
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(ZIDANE.read_bytes()[:30_000])
    photos = [BUS, cut, ZIDANE, BUS]
    jobs = [replace(job_for(p, tmp_path / f"batch{i}"), threads=2) for i, p in enumerate(photos)]
    params = DetectParams()
    models.unload()  # what other tests loaded, outside a worker's `serving`
    with models.serving(params.model):  # as a worker runs it
        together = DetectStep().run_batch(jobs, params)
    (held,) = [r for r in models.resident() if r.name == params.model]
    alone = {p: DetectStep().run(job_for(p, tmp_path / p.stem), params) for p in (BUS, ZIDANE)}

    assert isinstance(together[1], InputError) and "truncated" in str(together[1])
    for i in (0, 2, 3):
        result, single = together[i], alone[photos[i]]
        assert isinstance(result, StepResult), result
        assert result.data["counts"] == single.data["counts"] and result.data["detections"] > 0
        report = _report(result)
        assert report.parent == jobs[i].workdir
        found, expected = (
            json.loads(r.read_text())["detections"] for r in (report, _report(single))
        )
        for box, other in zip(found, expected, strict=True):
            assert box["label"] == other["label"]
            assert box["box"] == pytest.approx(other["box"], abs=1.0)
    weights = models.locate(params.model)
    copies = [k for k in held.keys if k.startswith(f"ultralytics:{weights.resolve()}:")]
    assert len(copies) == 2, held.keys  # the second thread's own copy
    assert held.size == 2 * weights.stat().st_size


def _report(result: StepResult) -> Path:
    (report,) = [a.path for a in result.artifacts if a.name.endswith(".json")]
    return report


def text_job(root: Path, name: str, text: str) -> StepInput:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    artifact = Artifact(f"{name}.txt", folder / f"{name}.txt", "text/plain; charset=utf-8")
    job = job_for(folder / f"{name}.txt", folder / "work")
    return replace(
        job, job_id=name, source_name=f"{name}.pdf", artifacts=(artifact,), home=root / "home"
    )


def test_index_in_a_batch_stores_each_job_as_alone_and_a_job_without_text_fails_alone(
    tmp_path: Path,
) -> None:
    docs = CORPUS[:3] + CORPUS[15:18]
    params = IndexParams()
    alone_root, batch_root = tmp_path / "alone", tmp_path / "batch"
    alone = [IndexStep().run(text_job(alone_root, d["id"], d["text"]), params) for d in docs]
    jobs = [text_job(batch_root, d["id"], d["text"]) for d in docs]
    photo = replace(job_for(BUS, batch_root / "photo"), home=batch_root / "home")  # no text
    together = IndexStep().run_batch([*jobs[:2], photo, *jobs[2:]], params)

    assert isinstance(together[2], StepError) and "nothing to index" in str(together[2])
    del together[2]
    for single, batched in zip(alone, together, strict=True):
        assert isinstance(batched, StepResult)
        keep = ("chunks", "pages", "texts", "embedder", "dimension")
        assert {k: batched.data[k] for k in keep} == {k: single.data[k] for k in keep}
    model = embedder("e5", home=alone_root / "home")
    with Store(index_path(alone_root / "home")) as a, Store(index_path(batch_root / "home")) as b:
        assert a.counts() == b.counts() == (6, sum(r.data["chunks"] for r in alone))
        for d in docs:  # a query in the other language finds the same chunk in both
            query = model.query(d["q_pt"] if d["lang"] == "en" else d["q_en"])
            first, second = a.nearest(query, 1)[0][0], b.nearest(query, 1)[0][0]
            assert a.chunks([first])[first].chunk.text == b.chunks([second])[second].chunk.text


def test_transcribe_in_a_batch_hears_recordings_side_by_side_as_alone_and_a_bad_one_fails_alone(
    tmp_path: Path,
) -> None:
    """On a CPU with two threads, two recordings are heard at once, a thread each, by one model
    with two workers; each transcript is the one it gets alone on one thread."""
    said = []
    for i in range(2):
        said.append(tmp_path / f"said{i}.wav")
        speech_clip.speak(said[i], speech_clip.PARAGRAPHS[i : i + 1], pause=0.5)
    broken = tmp_path / "broken.m4a"
    broken.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(range(256)) * 40)

    def job(source: Path, name: str, threads: int) -> StepInput:
        made = job_for(source, tmp_path / name)
        return replace(made, job_id=name, home=tmp_path / "home", threads=threads)

    def transcript(result: StepResult | Exception) -> str:
        assert isinstance(result, StepResult), result
        (text,) = [a.path for a in result.artifacts if a.name.endswith(".txt")]
        return text.read_text()

    params = TranscribeParams()
    recordings = [said[0], broken, said[1]]
    together = TranscribeStep().run_batch(
        [job(r, f"batch{i}", threads=2) for i, r in enumerate(recordings)], params
    )
    alone = [
        TranscribeStep().run(job(r, f"alone{i}", threads=1), params) for i, r in enumerate(said)
    ]

    assert isinstance(together[1], StepError) and "cannot read broken.m4a" in str(together[1])
    for result, single in [(together[0], alone[0]), (together[2], alone[1])]:
        assert transcript(result) == transcript(single)
        assert isinstance(result, StepResult) and result.data["threads"] == 1
    assert "reading room" in transcript(together[0]).lower()  # what was said, heard
    assert "deposit of two months" in transcript(together[2]).lower()


def test_tts_in_a_batch_speaks_texts_side_by_side_as_alone_and_an_empty_one_fails_alone(
    tmp_path: Path,
) -> None:
    """On a CPU with two threads, two texts are spoken at once on the voice's one-thread
    session; each WAV says what it says alone (Piper's noise makes lengths differ a little)."""
    texts = [speech_clip.PARAGRAPHS[0], "   \n  ", speech_clip.PARAGRAPHS[1]]
    for i, text in enumerate(texts):
        (tmp_path / f"text{i}.txt").write_text(text)

    def job(i: int, name: str, threads: int) -> StepInput:
        made = job_for(tmp_path / f"text{i}.txt", tmp_path / name)
        return replace(made, job_id=name, home=tmp_path / "home", threads=threads)

    params = TtsParams(compress="ogg")
    together = TtsStep().run_batch([job(i, f"batch{i}", threads=2) for i in range(3)], params)
    alone = {i: TtsStep().run(job(i, f"alone{i}", threads=1), params) for i in (0, 2)}

    assert isinstance(together[1], InputError) and "no text to speak" in str(together[1])
    for i, single in alone.items():
        result = together[i]
        assert isinstance(result, StepResult), result
        assert [a.name for a in result.artifacts] == [f"text{i}.wav", f"text{i}.ogg"]
        assert result.artifacts[0].path.parent == tmp_path / f"batch{i}"
        for key in ("language", "voice", "pieces", "characters"):
            assert result.data[key] == single.data[key]
        seconds = result.data["duration_seconds"]
        assert seconds == pytest.approx(single.data["duration_seconds"], rel=0.1) and seconds > 5
        with wave.open(str(result.artifacts[0].path)) as wav:
            assert wav.getnframes() / wav.getframerate() == pytest.approx(seconds, abs=0.01)
