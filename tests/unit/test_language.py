"""Language detection on the short texts that are hardest: lines, titles, search queries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import py3langid
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


# A fresh process detects each text with the home given (or not), printing what it found and
# which model files it opened (an audit hook sees every open).
DETECT_IN_A_PROCESS = """
import json, sys
from pathlib import Path
opened = []
sys.addaudithook(lambda event, args: opened.append(str(args[0])) if event == "open" else None)
from caixa.pipelines.common.language import detect
home = Path(sys.argv[1]) if sys.argv[1] else None
found = [detect(text, home=home) for text in json.loads(sys.argv[2])]
print(json.dumps({
    "found": [[f.language, f.confidence] for f in found],
    "opened": sorted({p for p in opened if "py3langid" in p and p.endswith((".xz", ".npz"))}),
}))
"""
PACKED = Path(py3langid.__file__).parent / "data" / "model.npz.xz"
TEXTS = [*SHORT["pt"], *SHORT["en"], "El pago debe realizarse antes del día diez de cada mes."]


def detect_in_a_process(home: Path | None) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", DETECT_IN_A_PROCESS, str(home or ""), json.dumps(TEXTS)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def test_a_home_keeps_the_detector_unpacked_and_the_next_process_reads_that(
    tmp_path: Path,
) -> None:
    packaged = detect_in_a_process(None)
    assert [f[0] for f in packaged["found"]] == ["pt"] * 5 + ["en"] * 5 + ["es"]
    assert [Path(p).name for p in packaged["opened"]] == ["model.npz.xz"]

    first = detect_in_a_process(tmp_path)  # unpacks the model into the home, then reads that
    (copy,) = (tmp_path / "models").glob("py3langid-*.npz")
    assert copy.stat().st_mode & 0o777 == 0o644  # a `caixa search` by another user reads it
    again = detect_in_a_process(tmp_path)
    assert again["opened"] == [str(copy)], "the packaged LZMA file is not unpacked again"
    assert first["found"] == again["found"] == packaged["found"]


def test_a_copy_cut_short_is_not_used_and_is_made_again(tmp_path: Path) -> None:
    packaged = detect_in_a_process(None)
    detect_in_a_process(tmp_path)
    (copy,) = (tmp_path / "models").glob("py3langid-*.npz")
    whole = copy.stat().st_size
    with copy.open("r+b") as f:  # as a crash in the middle of writing it would leave it
        f.truncate(whole // 2)

    damaged = detect_in_a_process(tmp_path)
    assert damaged["found"] == packaged["found"]
    assert not copy.exists(), "removed, so the next process makes it again"
    detect_in_a_process(tmp_path)
    assert copy.stat().st_size == whole


def test_what_an_earlier_unpacking_left_is_removed(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    other = models / "py3langid-0.3.0-4000000.npz"  # a copy for the py3langid of before
    other.write_bytes(b"old tables")
    crashed = models / ".py3langid-0.4.0-4586720.npz.k2j4x8"  # a crash left it half written
    crashed.write_bytes(b"half")
    os.utime(crashed, (time.time() - 3600, time.time() - 3600))
    writing = models / ".py3langid-0.4.0-4586720.npz.q8w1z3"  # another process writes it now
    writing.write_bytes(b"being written")

    found = detect_in_a_process(tmp_path)

    assert found["found"] == detect_in_a_process(None)["found"]
    assert sorted(p.name for p in models.iterdir()) == sorted(
        [f"py3langid-{metadata.version('py3langid')}-{PACKED.stat().st_size}.npz", writing.name]
    )
