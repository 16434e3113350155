"""The llm step's rule parameters, text cut to a token budget, and reading a model's answer:
everything that needs no model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from caixa.errors import StepError
from caixa.pipelines.llm.chat import Generation, pieces
from caixa.pipelines.llm.openai_api import base_url
from caixa.pipelines.llm.step import LlmParams, LlmStep, pick_label


def params(**given: Any) -> LlmParams:
    return LlmParams.model_validate(given)


def refusal(**given: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        params(**given)
    return str(caught.value)


def test_each_task_gets_what_it_needs_and_nothing_it_would_ignore() -> None:
    assert "needs `labels`" in refusal(task="classify")
    assert "at least two different" in refusal(task="classify", labels=["spam"])
    assert "at least two different" in refusal(task="classify", labels=["a", " a"])
    assert "needs `schema`" in refusal(task="extract")
    assert "only for task classify" in refusal(task="summarize", labels=["a", "b"])
    assert "only for task extract" in refusal(task="prompt", schema={"type": "object"})
    assert "only for a `server`" in refusal(task="prompt", api_key_env="KEY")
    assert "http://" in refusal(task="prompt", server="localhost:11434")
    described = params(task="classify", labels={"bill ": "money owed", "note": "a note"})
    assert described.labels == {"bill": "money owed", "note": "a note"}


def test_a_schema_that_is_not_json_schema_is_refused_saying_where() -> None:
    message = refusal(task="extract", schema={"type": "object", "properties": {"a": {"type": 3}}})
    assert "not a valid JSON Schema at properties/a/type" in message
    assert "not a valid JSON Schema" in refusal(task="extract", schema={"required": "name"})


def test_the_schema_round_trips_as_the_daemon_stores_it() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    stored = params(task="extract", schema=schema).model_dump(mode="json")
    assert LlmParams.model_validate(stored).json_schema == schema


def test_the_model_a_job_would_load_is_known_before_it_runs(tmp_path: Path) -> None:
    assert LlmStep.model_of(params(task="prompt")) == "smollm2-135m-instruct"
    gguf = tmp_path / "m.gguf"
    assert LlmStep.model_of(params(task="prompt", model=str(gguf))) == str(gguf.resolve())
    served = params(task="prompt", server="http://127.0.0.1:8080/v1", model="qwen")
    assert LlmStep.model_of(served) is None  # the server holds it
    # in rules.yaml a relative GGUF path is the rules file's neighbour, as for every step
    near = LlmParams.model_validate(
        {"task": "prompt", "model": "m.gguf"}, context={"base": tmp_path}
    )
    assert near.model == str(gguf)


def test_a_label_needs_one_schema_in_process_and_an_object_for_a_server() -> None:
    local = params(task="classify", labels=["a", "b"]).label_schema()
    assert local == {"type": "string", "enum": ["a", "b"]}
    served = params(task="classify", labels=["a", "b"], server="http://h:1").label_schema()
    assert served["properties"]["label"]["enum"] == ["a", "b"]


def words(text: str) -> int:
    return len(text.split())


def test_text_is_cut_between_paragraphs_then_sentences_then_words() -> None:
    paras = ["One two three. Four five six.", "Seven eight nine ten.", "Eleven twelve."]
    text = "\n\n".join(paras)
    assert pieces(text, 100, words) == [text]
    parts = pieces(text, 8, words)
    assert all(words(p) <= 8 for p in parts)
    assert " ".join(" ".join(parts).split()) == " ".join(text.split())
    assert parts[0] == "One two three. Four five six."
    long_sentence = " ".join(f"w{i}" for i in range(50))
    cut = pieces(long_sentence, 10, words)
    assert len(cut) >= 5 and " ".join(cut) == long_sentence


def answer(text: str) -> Generation:
    return Generation(text, 10, 3, 0.1, 0.05, "stop")


def test_a_label_is_read_from_json_or_from_a_bare_answer_and_never_invented() -> None:
    labels = ["invoice", "personal"]
    assert pick_label(answer('"invoice"'), labels) == "invoice"
    assert pick_label(answer('{"label": "personal"}'), labels) == "personal"
    assert pick_label(answer("It is an Invoice."), labels) == "invoice"
    with pytest.raises(StepError, match="not one of the labels"):
        pick_label(answer("spam"), labels)
    with pytest.raises(StepError, match="not one of the labels"):
        pick_label(answer("invoice or personal"), labels)


def test_a_server_url_may_name_only_its_host() -> None:
    assert base_url("http://127.0.0.1:11434") == "http://127.0.0.1:11434/v1"
    assert base_url("http://127.0.0.1:8080/v1/") == "http://127.0.0.1:8080/v1"
    assert base_url("https://llm.lan/api/v1") == "https://llm.lan/api/v1"


def test_an_answer_cut_at_max_tokens_ends_on_a_whole_sentence() -> None:
    def cut(text: str) -> str:
        return Generation(text, 10, 3, 0.1, 0.05, "length").whole_text

    assert cut("The rent is 850 euros. The deposit is two mon") == "The rent is 850 euros."
    assert cut("First point.\n\nThe deposit is two mon") == "First point."
    assert cut("Only a fragment of a sente") == "Only a fragment of a sente"  # nothing better
    assert cut("A whole answer.") == "A whole answer."
    assert answer("Not cut, no full stop").whole_text == "Not cut, no full stop"
