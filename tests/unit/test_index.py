"""Chunking and the index store, with the real e5 model and a real SQLite file."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from caixa.errors import InputError
from caixa.pipelines.base import Artifact, StepInput
from caixa.pipelines.index import cells
from caixa.pipelines.index.embed import Embedder, embedder
from caixa.pipelines.index.retrieve import MARK, fts_query, rank
from caixa.pipelines.index.step import IndexParams, IndexStep, chunk_text
from caixa.pipelines.index.store import (
    Chunk,
    Document,
    EmbedderInfo,
    IndexUnusableError,
    Store,
)

CORPUS = json.loads((Path(__file__).parents[1] / "data" / "bilingual.json").read_text())


def test_chunks_keep_sentences_whole_overlap_and_never_cross_a_page() -> None:
    page1 = "\n\n".join(d["text"] for d in CORPUS[:3])
    page3 = CORPUS[3]["text"]
    chunks = list(chunk_text(f"{page1}\f\f{page3}\f", 400, 120))
    assert {page for page, _ in chunks} == {1, 3}  # page 2 is empty; the last \f ends page 3
    assert all(len(text) <= 400 for _, text in chunks)
    assert all(text[-1] in ".!?" for _, text in chunks)  # whole sentences only
    first, second = chunks[0][1], chunks[1][1]
    last_sentence = first.rsplit(". ", 1)[-1]
    assert second.startswith(last_sentence)  # the overlap is the last sentence(s)
    assert chunks[-1][1].startswith("Convocatória para reunião")  # a new page starts afresh


def test_a_chunk_ends_at_a_paragraph_rather_than_splitting_the_next_one() -> None:
    para = "Uma frase curta sobre o contrato. Outra frase sobre a renda do mês."  # 67 chars
    chunks = [text for _, text in chunk_text(f"{para}\n\n{para}\n\n{para}", 160, 0)]
    assert chunks == [f"{para}\n{para}", para]


def test_a_sentence_longer_than_a_chunk_is_cut_between_words() -> None:
    words = " ".join(f"palavra{i}" for i in range(200))
    chunks = [text for _, text in chunk_text(words, 200, 50)]
    assert all(len(c) <= 200 for c in chunks)
    assert " ".join(chunks).split()[:5] == words.split()[:5]
    assert chunks[-1].endswith("palavra199")


def test_params_refuse_unknown_keys_and_an_overlap_as_large_as_the_chunk() -> None:
    assert IndexParams().embedder == "e5"
    with pytest.raises(ValueError, match="extra"):
        IndexParams.model_validate({"chunk_size": 10})
    with pytest.raises(ValueError, match="overlap_chars must be under half"):
        IndexParams(chunk_chars=400, overlap_chars=300)


@pytest.fixture(scope="module")
def e5(tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    return embedder("e5", home=tmp_path_factory.mktemp("home"))


def store_with(path: Path, model: Embedder, docs: list[dict[str, str]]) -> Store:
    store = Store(path)
    store.bind(EmbedderInfo(model.backend, model.model, model.dimension))
    for d in docs:
        chunks = [
            Chunk(f"{d['id']}.txt", p, t, d["lang"]) for p, t in chunk_text(d["text"], 800, 150)
        ]
        vectors = model.passages([c.text for c in chunks])
        store.replace(
            Document(f"job-{d['id']}", f"{d['id']}.txt", "r", d["lang"], ()), chunks, vectors
        )
    return store


def test_reindexing_a_document_replaces_its_chunks_and_dropping_removes_everything(
    tmp_path: Path, e5: Embedder
) -> None:
    store = store_with(tmp_path / "index.sqlite3", e5, CORPUS[:3])
    assert store.counts() == (3, 3)
    # the same file under the same rule, by another job: the old version goes
    new = Chunk("multa.txt", 1, "Segunda versão: a coima foi anulada pelo tribunal.", "pt")
    store.replace(Document("job-other", "multa.txt", "r", "pt", ()), [new], e5.passages([new.text]))
    assert store.counts() == (3, 3)
    assert store.words(fts_query("radar") or "", 10) == []
    assert len(store.words(fts_query("anulada") or "", 10)) == 1
    assert store.drop(["job-other"]) == 1
    assert store.counts() == (2, 2)
    assert store.words(fts_query("anulada") or "", 10) == []
    tables = {
        t: store.db.execute(f"SELECT COUNT(*) FROM {t}").fetchall()[0][0]
        for t in ("chunks", "chunk_vectors", "chunks_fts")
    }
    assert tables == {"chunks": 2, "chunk_vectors": 2, "chunks_fts": 2}


def test_words_match_without_accents_and_snippets_mark_them(tmp_path: Path, e5: Embedder) -> None:
    store = store_with(tmp_path / "index.sqlite3", e5, CORPUS[:12])
    ranked = rank(store, ["infracao"], [e5.query("infracao")], 3)
    chunk, _, snippet = ranked[0]
    assert chunk.document.source_name == "multa.txt"
    assert f"{MARK[0]}infração{MARK[1]}" in snippet
    assert fts_query('"; DROP TABLE -- a de "x*') == '"drop" OR "table" OR "x"'  # no FTS syntax


def test_an_index_refuses_vectors_of_another_model(tmp_path: Path, e5: Embedder) -> None:
    store = store_with(tmp_path / "index.sqlite3", e5, CORPUS[:1])
    with pytest.raises(
        IndexUnusableError, match=r"holds vectors of e5 enpt \(384 dimensions\).*same embedder"
    ):
        store.bind(EmbedderInfo("sentence-transformers", "all-minilm-l6-v2", 384))


def test_searching_a_home_without_an_index_says_so(tmp_path: Path) -> None:
    with pytest.raises(IndexUnusableError, match=r"no search index at .*nothing has been indexed"):
        Store(tmp_path / "index.sqlite3", create=False)


def test_vectors_are_split_into_cells_as_they_grow_and_stay_findable(
    tmp_path: Path, e5: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cells, "TRAIN_AT", 10)  # thresholds for 30 vectors instead of 100,000
    monkeypatch.setattr(cells, "CELL_SIZE", 4)
    store = store_with(tmp_path / "index.sqlite3", e5, CORPUS[:12])
    query = e5.query("speeding ticket caught by a camera on the motorway")
    exact = store.nearest(query, 5)  # one cell: an exact scan
    assert store.maintain()
    assert store.db.execute("SELECT COUNT(*) FROM cells").fetchall() == [(3,)]
    assert not store.maintain()  # not again until the index doubles
    after = store.nearest(query, 5)  # 3 cells, all of them probed: still exact
    assert [i for i, _ in after] == [i for i, _ in exact]
    assert [s for _, s in after] == pytest.approx([s for _, s in exact])
    for d in CORPUS[12:]:
        chunks = [Chunk(f"{d['id']}.txt", 1, d["text"], d["lang"])]
        store.replace(
            Document(d["id"], f"{d['id']}.txt", "r", d["lang"], ()),
            chunks,
            e5.passages([d["text"]]),
        )
    assert store.maintain()
    assert store.db.execute("SELECT COUNT(*) FROM cells").fetchall() == [(7,)]
    best = store.nearest(query, 1)[0][0]
    assert store.chunks([best])[best].document.source_name == "multa.txt"
    assert store.db.execute("SELECT COUNT(*) FROM chunk_vectors").fetchall() == [(30,)]


def scan_job(root: Path, texts: dict[str, str]) -> StepInput:
    for name, text in texts.items():
        (root / name).write_text(text, encoding="utf-8")
    return StepInput(
        job_id="job-scan",
        rule="scans",
        source=root / "scan.pdf",
        source_name="scan.pdf",
        media_type="application/pdf",
        artifacts=tuple(Artifact(n, root / n, "text/plain; charset=utf-8") for n in texts),
        workdir=root,
        home=root / "home",
    )


def test_the_step_indexes_every_text_of_a_job_with_its_language_and_publishes_nothing(
    tmp_path: Path,
) -> None:
    pt = f"{CORPUS[0]['text']}\f{CORPUS[2]['text']}"
    en = f"{CORPUS[15]['text']}\f{CORPUS[16]['text']}"
    result = IndexStep().run(scan_job(tmp_path, {"scan.txt": pt, "scan.en.txt": en}), IndexParams())
    assert result.artifacts == []
    assert result.data["texts"] == [
        {"name": "scan.txt", "language": "pt", "chunks": 2},  # detected
        {"name": "scan.en.txt", "language": "en", "chunks": 2},  # from the name
    ]
    assert (result.data["chunks"], result.data["pages"], result.data["dimension"]) == (4, 2, 384)
    assert result.models == ["e5:enpt"]
    # indexed again with no words (say, OCR found none): the old chunks go, the job is fine
    again = IndexStep().run(scan_job(tmp_path, {"scan.txt": "\f \f"}), IndexParams())
    assert again.data["chunks"] == 0
    with Store(tmp_path / "home" / "index.sqlite3") as store:
        assert store.counts() == (1, 0)


def test_the_step_refuses_a_job_with_no_text_and_says_what_to_add(tmp_path: Path) -> None:
    job = scan_job(tmp_path, {})
    with pytest.raises(InputError, match="put `ocr` or `text` before `index`"):
        IndexStep().run(job, IndexParams())


def test_a_long_text_says_how_far_its_embedding_is_and_keeps_each_vector_with_its_chunk(
    tmp_path: Path, e5: Embedder
) -> None:
    words = "river engine garden letter winter copper violin harbour pepper castle tunnel".split()
    notes = [
        f"Note {i}: the {words[i % 11]} by the {words[i * 7 % 11]} near the {words[i * 5 % 11]}"
        f" and past the {words[i * 3 % 11]}."  # over half a chunk: one note a chunk
        for i in range(300)
    ]
    heard: list[float] = []
    job = replace(scan_job(tmp_path, {"notes.txt": "\n\n".join(notes)}), progress=heard.append)
    result = IndexStep().run(job, IndexParams(chunk_chars=100, overlap_chars=0))
    assert result.data["chunks"] == 300
    assert heard == [256 / 300, 1.0]  # after each slice of 256 chunks
    with Store(tmp_path / "home" / "index.sqlite3") as store:
        for note in (notes[0], notes[255], notes[256], notes[-1]):  # either side of the cut
            ((found, _),) = store.nearest(e5.passages([note])[0], 1)
            assert store.chunks([found])[found].chunk.text == note
