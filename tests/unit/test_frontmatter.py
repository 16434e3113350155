"""Front matter of prompt files: settings above the text, and errors a user can act on."""

from __future__ import annotations

import codecs

import pytest

from caixa.errors import InputError
from caixa.pipelines.common.text import decode
from caixa.pipelines.imagegen.frontmatter import parse
from caixa.pipelines.imagegen.step import PromptSettings


def settings(text: str) -> tuple[PromptSettings, str]:
    return parse(text, PromptSettings)


def error(text: str) -> str:
    with pytest.raises(InputError) as caught:
        settings(text)
    return str(caught.value)


def test_a_file_without_front_matter_is_all_prompt() -> None:
    own, body = settings("A lighthouse at dusk\n---\nstill the prompt\n")
    assert own == PromptSettings()
    assert body == "A lighthouse at dusk\n---\nstill the prompt\n"


def test_settings_in_any_encoding_and_line_ending_override_only_what_they_name() -> None:
    raw = codecs.BOM_UTF16_LE + (
        "---\r\nseed: 42\r\nnegative_prompt: borrão, texto\r\nscheduler: euler_a\r\n---\r\n"
        "Um farol numa costa rochosa ao entardecer\r\n"
    ).encode("utf-16-le")
    own, body = settings(decode(raw, "auto", "text/plain")[0])
    assert own.seed == 42 and own.scheduler == "euler_a"
    assert own.negative_prompt == "borrão, texto"
    assert own.steps is None and own.width is None and own.model is None
    assert body == "Um farol numa costa rochosa ao entardecer\n"


def test_an_unknown_key_is_named_with_its_line_and_the_allowed_keys() -> None:
    message = error("---\nseed: 1\nstepz: 10\n---\nA cat\n")
    assert "line 3: unknown key 'stepz'" in message
    assert (
        "(allowed: negative_prompt, steps, guidance, width, height, seed, scheduler, model)"
        in message
    )


@pytest.mark.parametrize(
    ("front", "expected"),
    [
        ("width: 100", "line 2: width: give a multiple of 8 from 64 to 2048 pixels (got 100)"),
        ("height: 4096", "height: give a multiple of 8 from 64 to 2048 pixels (got 4096)"),
        ("steps: 0", "line 2: steps: Input should be greater than or equal to 1 (got 0)"),
        ("seed: -1", "seed: Input should be greater than or equal to 0 (got -1)"),
        ("scheduler: karras", "scheduler: unknown scheduler (known: euler, euler_a, heun,"),
        ("seed: [1", "not valid YAML: line 3"),
        ("- seed: 1", "must be 'key: value' lines (e.g. 'seed: 42'), not a sequence (line 2)"),
        ("seed: 1\nseed: 2", "gives 'seed' twice (lines 2 and 3)"),
    ],
)
def test_bad_settings_say_where_and_what_is_wrong(front: str, expected: str) -> None:
    assert expected in error(f"---\n{front}\n---\nA cat\n")


def test_front_matter_never_closed_is_refused() -> None:
    assert "never closed" in error("---\nseed: 1\nA cat\n")
