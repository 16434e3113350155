"""Sentences and paragraphs of Portuguese and English, as translation and chunking need them."""

from __future__ import annotations

from caixa.pipelines.common.sentences import paragraphs, sentences


def test_sentences_keep_abbreviations_initials_and_decimals_together() -> None:
    assert sentences('O Sr. Silva chegou às 10h. Ele disse: "Olá!" Depois saiu.') == [
        "O Sr. Silva chegou às 10h.",
        'Ele disse: "Olá!"',
        "Depois saiu.",
    ]
    assert sentences("Dr. Smith paid $3.50, e.g. for coffee. J. R. R. Tolkien wrote? Yes.") == [
        "Dr. Smith paid $3.50, e.g. for coffee.",
        "J. R. R. Tolkien wrote?",
        "Yes.",
    ]
    assert sentences("Custa R$ 1.234,56 (aprox. mil). É caro… Não é?") == [
        "Custa R$ 1.234,56 (aprox. mil).",
        "É caro…",
        "Não é?",
    ]


def test_paragraphs_split_on_blank_lines_and_page_breaks_and_join_wrapped_lines() -> None:
    text = "Primeira linha\ncontinua aqui.\n\nSegundo parágrafo.\fPágina dois.\n"
    assert paragraphs(text) == [
        "Primeira linha continua aqui.",
        "Segundo parágrafo.",
        "Página dois.",
    ]
    assert paragraphs(" \n\n\f ") == []
