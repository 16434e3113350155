"""The llm step through the real daemon and the real `caixa` command: a label routes a mail's
output folder, `*.ask` files and `caixa ask` answer from twelve indexed documents citing the
one that holds the answer, and bad inputs fail clearly."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import World

CORPUS = {
    d["id"]: d["text"]
    for d in json.loads((Path(__file__).parents[1] / "data" / "bilingual.json").read_text())
}
DOCUMENTS = [
    "arrendamento", "multa", "eletricidade", "cafeteira", "seguro-auto", "hotel",
    "flight", "gym", "blood-test", "library", "tomato-soup", "passport",
]  # fmt: skip
QUESTIONS = {
    "rent.ask": ("How much is the rent and the deposit for the flat in Porto?", "arrendamento.txt"),
    "voo.ask": ("O meu voo foi cancelado: que indemnização posso pedir?", "flight.txt"),
    "descale.ask": ("How do I descale the espresso machine?", "cafeteira.txt"),
}
LABELS = ["invoice", "complaint", "personal", "newsletter"]
MAILS = {
    "bill.txt": "Invoice 2024-117: consulting, total 450.00 EUR, due on 30 April.",
    "fatura.txt": "Fatura n.º 88: serviços de canalização, total a pagar 120,50 euros.",
    "angry.txt": "The washing machine you sold me broke after two days. I want a refund.",
    "mae.txt": "Olá mãe, chego no sábado para o almoço. Beijinhos, Ana",
}
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """Twelve documents indexed and four mails sorted in one run; then the questions."""
    world = World(tmp_path_factory.mktemp("library"))
    world.env.update(OFFLINE)
    world.write_rules(
        f"""
rules:
  - name: docs
    inbox: docs
    steps: [text, index]
  - name: mail
    inbox: mail
    steps:
      - llm: {{task: classify, labels: {json.dumps(LABELS)}}}
    output: "{{rule}}/{{label}}/{{stem}}"
  - name: questions
    inbox: questions
    match: {{glob: ["*.ask"]}}
    steps:
      - llm: {{task: ask, passages: 3, max_tokens: 96}}
"""
    )
    for doc in DOCUMENTS:
        (world.inbox("docs") / f"{doc}.txt").write_text(CORPUS[doc])
    for name, text in MAILS.items():
        (world.inbox("mail") / name).write_text(text)
    done = world.run_once(timeout=600)
    assert "16 done, 0 duplicates, 0 failed" in done.stderr
    for name, (question, _) in QUESTIONS.items():
        (world.inbox("questions") / name).write_text(question + "\n")
    done = world.run_once(timeout=600)
    assert "3 done, 0 duplicates, 0 failed" in done.stderr
    yield world
    world.stop_all()


def test_the_label_routes_each_mail_to_its_folder(library: World) -> None:
    for name in MAILS:
        stem = Path(name).stem
        (found,) = library.outputs.glob(f"mail/*/{stem}/{stem}.label.json")
        label = json.loads(found.read_text())["label"]
        assert label in LABELS and found.parent.parent.name == label
        manifest = json.loads((found.parent / "manifest.json").read_text())
        (run,) = manifest["steps"]
        assert run["data"]["label"] == label and run["data"]["backend"] == "llama.cpp"
        assert run["data"]["tokens_per_second"] > 0 and run["data"]["completion_tokens"] > 0


def test_an_ask_file_is_answered_citing_the_document_that_holds_the_answer(
    library: World,
) -> None:
    for name, (question, expected) in QUESTIONS.items():
        stem = Path(name).stem
        answer = (library.outputs / "questions" / stem / f"{stem}.answer.md").read_text()
        assert answer.startswith(f"# {question}\n")
        body, sources = answer.split("\n## Sources\n")
        assert body.strip() != f"# {question}"  # the model wrote something
        assert f"1. **{expected}**" in sources, (question, sources)
        assert "in `docs/" in sources  # where its outputs are
        manifest = json.loads((library.outputs / "questions" / stem / "manifest.json").read_text())
        data = manifest["steps"][0]["data"]
        assert data["sources"][0]["file"] == expected and data["calls"] == 1


def test_caixa_ask_answers_on_the_command_line(library: World) -> None:
    done = library.caixa(
        "ask", "Quanto custa a renda do apartamento e a caução?", "--json", "-n", "3",
        "--max-tokens", "64", "--home", str(library.home), "--rules", str(library.rules),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["answer"] and found["model"] == "llama.cpp:smollm2-135m-instruct"
    assert found["sources"][0]["file"] == "arrendamento.txt"
    assert found["sources"][0]["folder"] == str(library.outputs / "docs" / "arrendamento")
    assert 0 < found["completion_tokens"] <= 64


def test_caixa_ask_without_an_index_says_so(world: World) -> None:
    world.write_rules("rules:\n  - name: a\n    inbox: in\n    steps: [copy]\n")
    done = world.caixa("ask", "anything?", "--home", str(world.home))
    assert done.returncode == 5
    assert "no search index" in done.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bad_inputs_fail_clearly_and_an_unreachable_server_is_retried(world: World) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    world.write_rules(
        f"""
rules:
  - name: remote
    inbox: remote
    steps:
      - llm: {{task: summarize, server: "{url}", model: any}}
  - name: mail
    inbox: mail
    steps:
      - llm: {{task: classify, labels: [a, b]}}
"""
    )
    (world.inbox("remote") / "report.txt").write_text("A short report about the harvest.\n")
    (world.inbox("mail") / "empty.txt").write_bytes(b"")
    (world.inbox("mail") / "blank.txt").write_text("   \n\n\t  \n")
    done = world.run_once()
    assert "0 done, 0 duplicates, 3 failed" in done.stderr
    error = json.loads((world.failed / "remote" / "report.txt.error.json").read_text())
    assert error["step"] == "llm" and error["attempts"] == 3  # retried, then failed
    assert f"cannot reach the LLM server at {url}/chat/completions" in error["message"]
    blank = json.loads((world.failed / "mail" / "blank.txt.error.json").read_text())
    assert "blank.txt has no text" in blank["message"]
    empty = json.loads((world.failed / "mail" / "empty.txt.error.json").read_text())
    assert "empty" in empty["message"]


def test_a_schema_that_is_not_json_schema_is_refused_by_check(world: World) -> None:
    world.write_rules(
        """
rules:
  - name: forms
    inbox: in
    steps:
      - llm:
          task: extract
          schema:
            type: object
            properties:
              total: {type: money}
"""
    )
    done = world.caixa("check", "--rules", str(world.rules))
    assert done.returncode == 3
    assert f"{world.rules}:8: rules[0].steps[0].llm.schema: " in done.stderr
    assert "not a valid JSON Schema at properties/total/type" in done.stderr
