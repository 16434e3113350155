"""The llm step called directly with the real SmolLM2-135M-Instruct (loaded once per process by
caixa.models), and the same tasks through llama-cpp-python's own OpenAI-compatible server.

A 135M model writes poor prose, so these tests check what holds whatever it writes: a label is
always one of the rule's, extracted JSON always validates, a summary is never empty nor longer
than its text, a text longer than the context is read in parts or cut and says so.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from caixa import models
from caixa.errors import InputError
from caixa.pipelines.base import StepInput, StepResult
from caixa.pipelines.llm.llama import TEMPLATE_KEY, LlamaModel
from caixa.pipelines.llm.step import LlmParams, LlmStep
from tests.conftest import wait_until

LABELS = ["invoice", "complaint", "personal", "newsletter"]
MAILS = [
    "Invoice 2024-117: 3 hours of consulting, total 450.00 EUR, due on 30 April.",
    "Fatura n.º 88/2024: serviços de canalização, total a pagar 120,50 euros até dia 5.",
    "I am very unhappy: the washing machine you sold me broke after two days.",
    "Estou muito insatisfeito com o atendimento, a encomenda chegou partida e ninguém responde.",
    "Hi mum, I'll be home on Saturday for lunch. Love, Ana",
    "Olá avó, obrigado pelo bolo! Beijinhos do Pedro.",
    "This week in our newsletter: ten recipes for autumn and our new shop opening.",
    "Boletim mensal: novidades da biblioteca, horários de verão e a feira do livro.",
    "URGENT!!! PAY NOW OR YOUR ACCOUNT WILL BE CLOSED",
    "ok",
    "Reminder: your subscription renews on 1 June for 9.99 USD.",
    "Segue em anexo o recibo da renda de março, no valor de 650 €.",
    "Thanks for a lovely dinner last night, we should do it again soon 😊",
    "# Product update\n\n- faster sync\n- dark mode\n\nUnsubscribe at any time.",
    "A entrega atrasou três semanas e o produto não corresponde à descrição. Quero o reembolso.",
    "Dear customer, attached is the credit note for order 5521 (-35.00 EUR).",
    "Parabéns pelo teu aniversário! Vemo-nos no domingo?",
    "Your parcel could not be delivered. We will try again tomorrow.",
    "Nota de liquidação: imposto municipal sobre imóveis, 2.ª prestação, 187,20 euros.",
    "1234 5678 9012",
]
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sender": {"type": "string", "maxLength": 40},
        "amount": {"type": ["number", "null"]},
        "currency": {"enum": ["EUR", "USD", "BRL", None]},
        "date": {"type": ["string", "null"], "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
    },
    "required": ["sender", "amount", "currency"],
    "additionalProperties": False,
}
SHORT_PT = (
    "A reunião de condomínio do prédio da Avenida da Liberdade, n.º 120, realiza-se na "
    "quinta-feira, 14 de março, às 19h00, na sala do rés-do-chão. Na ordem de trabalhos estão a "
    "aprovação das contas de 2023, o orçamento para a pintura da fachada, estimado em 18 000 "
    "euros, e a substituição do elevador. Os condóminos que não puderem estar presentes podem "
    "fazer-se representar por procuração escrita. A administração pede a todos que confirmem a "
    "presença até ao dia 10."
)
LONG_EN = "\n\n".join(
    f"Chapter {n}. The town of Millbrook held its {n}th annual harvest fair on the green. "
    f"Farmers brought {n * 12} baskets of apples, and the baking contest drew {n + 20} entries. "
    "The mayor opened the fair at noon, the brass band played until the evening, and the "
    "proceeds went to the school library, which bought new books and a reading lamp. "
    "Volunteers cleaned the green the next morning, and the council thanked everyone."
    for n in range(1, 7)
)

step = LlmStep()
numbers = count(1)


def job_for(tmp_path: Path, text: str, name: str = "doc.txt") -> StepInput:
    n = next(numbers)
    source = tmp_path / f"source-{n}"
    source.write_text(text, encoding="utf-8")
    workdir = tmp_path / f"work-{n}"
    workdir.mkdir()
    return StepInput(
        job_id=f"job-{n}",
        rule="r",
        source=source,
        source_name=name,
        media_type="text/plain",
        artifacts=(),
        workdir=workdir,
        home=tmp_path / "home",
    )


def run(tmp_path: Path, text: str, name: str = "doc.txt", **given: Any) -> StepResult:
    return step.run(job_for(tmp_path, text, name), LlmParams.model_validate(given))


def output(result: StepResult) -> str:
    return result.artifacts[0].path.read_text(encoding="utf-8")


def test_a_short_document_is_summarized_shorter_in_its_language(tmp_path: Path) -> None:
    result = run(tmp_path, SHORT_PT, "reuniao.txt", task="summarize")
    summary = output(result).strip()
    assert result.artifacts[0].name == "reuniao.summary.md"
    assert summary and len(summary) < len(SHORT_PT)
    assert result.data["language"] == "pt" and result.data["parts"] == 1
    assert result.data["completion_tokens"] > 0 and result.data["tokens_per_second"] > 0
    assert result.data["first_token_seconds"] > 0
    assert result.models == ["llama.cpp:smollm2-135m-instruct"]


def test_a_document_longer_than_the_context_is_summarized_in_parts(tmp_path: Path) -> None:
    result = run(tmp_path, LONG_EN, task="summarize", n_ctx=512, max_tokens=48)
    summary = output(result).strip()
    assert summary and len(summary) < len(LONG_EN) // 2
    assert result.data["parts"] >= 2  # ~600 tokens, read ~370 at a time
    assert result.data["rounds"] >= 2 and result.data["calls"] == result.data["parts"] + 1


def test_every_label_is_one_of_the_rules(tmp_path: Path) -> None:
    seen = set()
    for i, mail in enumerate(MAILS):
        result = run(tmp_path, mail, f"mail{i}.txt", task="classify", labels=LABELS)
        label = result.fields["label"]
        assert label in LABELS, (mail, label)
        assert json.loads(output(result)) == {"label": label}
        assert result.data["label"] == label
        seen.add(label)
    assert len(seen) >= 2  # it reads the mail: not one label for everything


def test_extracted_json_always_validates_against_the_schema(tmp_path: Path) -> None:
    for i, mail in enumerate(MAILS):
        result = run(tmp_path, mail, f"mail{i}.txt", task="extract", schema=SCHEMA)
        assert result.artifacts[0].name == f"mail{i}.json"
        jsonschema.validate(json.loads(output(result)), SCHEMA)


def test_a_prompt_file_is_answered_in_markdown(tmp_path: Path) -> None:
    result = run(tmp_path, "List three fruits.", "fruits.prompt", task="prompt", max_tokens=40)
    assert result.artifacts[0].name == "fruits.md"
    assert output(result).strip()
    assert result.data["completion_tokens"] <= 40


def test_a_text_far_longer_than_the_context_is_cut_and_says_so(tmp_path: Path) -> None:
    huge = (LONG_EN + "\n\n") * 40  # ~120,000 characters, a context of 512 tokens
    result = run(tmp_path, huge, task="classify", labels=LABELS, n_ctx=512)
    assert result.fields["label"] in LABELS
    cut = result.data["truncated"]
    assert 200 < cut["kept_characters"] < 3000 and cut["characters"] == len(huge.strip())
    assert result.data["prompt_tokens"] <= 512


def test_a_file_with_no_text_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="has no text"):
        run(tmp_path, " \n\t\n  ", "blank.txt", task="summarize")


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 with its chat template hidden (the key renamed in place, same length, so the
    file stays valid): a model as a base model without a template comes."""
    target = tmp_path_factory.mktemp("base") / "no-template.gguf"
    shutil.copyfile(models.locate("smollm2-135m-instruct"), target)
    key = TEMPLATE_KEY.encode()
    with target.open("r+b") as f:
        head = f.read(8 << 20)
        assert head.count(key) == 1
        f.seek(head.index(key))
        f.write(key[:-1] + b"X")
    return target


def test_a_model_without_a_chat_template_gets_a_plain_prompt(
    tmp_path: Path, base_model: Path
) -> None:
    model = LlamaModel(str(base_model), n_ctx=1024, threads=1)
    assert not model.has_template
    tokens, _ = model.prompt([{"role": "user", "content": "Name a colour."}])
    assert model.llama.detokenize(tokens).decode().endswith("Name a colour.\n\nAnswer:\n")
    result = run(tmp_path, "Name a colour.", task="prompt", model=str(base_model), n_ctx=1024)
    assert output(result).strip()
    assert result.models == [f"llama.cpp:{base_model.resolve()}"]


# --- the same tasks through an OpenAI-compatible server ---------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llama_cpp.server` with SmolLM2 on a free loopback port; its base URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model",
             str(models.locate("smollm2-135m-instruct")), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048", "--n_threads", "1",
             "--n_threads_batch", "1", "--verbose", "false"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until(lambda: proc.poll() is not None or answers(url), 120, "the llama.cpp server")
        assert proc.poll() is None, log.read_text()[-2000:]
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def test_the_same_tasks_through_an_openai_compatible_server(tmp_path: Path, server: str) -> None:
    served: Callable[..., StepResult] = lambda text, **given: run(  # noqa: E731
        tmp_path, text, server=server, n_ctx=2048, **given
    )
    for mail in MAILS[:6]:
        result = served(mail, task="classify", labels=LABELS)
        assert result.fields["label"] in LABELS
        assert result.data["backend"] == "openai"
        assert result.data["prompt_tokens"] > 0 and result.data["completion_tokens"] > 0
    for mail in MAILS[:3]:
        jsonschema.validate(json.loads(output(served(mail, task="extract", schema=SCHEMA))), SCHEMA)
    summary = served(SHORT_PT, task="summarize", max_tokens=80)
    assert 0 < len(output(summary).strip()) < len(SHORT_PT)
    model = str(models.locate("smollm2-135m-instruct"))
    assert summary.models == [f"openai:{model}"]  # the name the server lists
