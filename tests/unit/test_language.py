"""Language detection on the short texts that are hardest: lines, titles, search queries."""

from __future__ import annotations

import pytest

from caixa.pipelines.common.language import detect

SHORT = {
    "pt": [
        "Obrigado pela ajuda",
        "Nota fiscal eletrônica",
        "O voo foi cancelado por causa do mau tempo.",
        "Segunda via do boleto",
        "Guarde este comprovante.",
    ],
    "en": [
        "Thanks for the help",
        "Electronic invoice",
        "The flight was cancelled because of bad weather.",
        "Opening hours",
        "Keep this receipt.",
    ],
}


@pytest.mark.parametrize(("language", "text"), [(k, t) for k, v in SHORT.items() for t in v])
def test_short_portuguese_and_english_texts_are_told_apart(language: str, text: str) -> None:
    found = detect(text)
    assert found.language == language
    assert 0.3 < found.confidence <= 1


def test_a_query_checked_against_english_and_portuguese_only_is_safer() -> None:
    # among a dozen candidates these read as Spanish and French (py3langid 0.4)
    assert detect("conta de luz", candidates=("en", "pt")).language == "pt"
    assert detect("exame de sangue", candidates=("en", "pt")).language == "pt"
    assert detect("car documents", candidates=("en", "pt")).language == "en"


def test_other_languages_are_not_taken_for_portuguese() -> None:
    assert detect("El pago debe realizarse antes del día diez de cada mes.").language == "es"
    assert detect("Le vol a été annulé à cause du mauvais temps.").language == "fr"


def test_ocr_damage_does_not_change_the_language() -> None:
    noisy = "Declar0, para os devid0s fins, que osenhor Joao da Silva trabalha nesta instituíção"
    found = detect(noisy)
    assert found.language == "pt" and found.confidence > 0.9
