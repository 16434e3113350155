"""Portuguese and English: the language a browser or a shell asks for, the catalogs complete
for every string the code and the page's templates use, and the CLI speaking Portuguese."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from caixa import i18n
from tests.conftest import World

ROOT = Path(__file__).parents[2]
METHODS = [("caixa/**.py", "python"), ("caixa/web/templates/**.html", "jinja2")]
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("pt-BR,pt;q=0.9,en;q=0.8", "pt"),
        ("en-GB,en;q=0.9,pt;q=0.8", "en"),
        ("fr-FR,fr;q=0.9,pt-PT;q=0.5", "pt"),
        ("de, en;q=0.1", "en"),
        ("pt;q=0, en", "en"),
        ("fr", None),
        ("", None),
    ],
)
def test_the_browser_language_is_followed(header: str, language: str | None) -> None:
    assert i18n.from_accept_language(header) == language


def test_the_shell_language_is_followed() -> None:
    assert i18n.from_environment({"LANG": "pt_BR.UTF-8"}) == "pt"
    assert i18n.from_environment({"LC_ALL": "en_US.UTF-8", "LANG": "pt_PT.UTF-8"}) == "en"
    assert i18n.from_environment({"LANG": "C"}) == "en"
    assert i18n.from_environment({}) == "en"


def test_every_string_has_its_portuguese_and_the_compiled_catalog_is_current() -> None:
    used = {
        message[2] if isinstance(message[2], str) else message[2][0]
        for message in extract_from_dir(
            ROOT,
            METHODS,
            keywords=KEYWORDS,
            options_map={"caixa/web/templates/**.html": {"extensions": "jinja2.ext.i18n"}},
        )
    }
    locale = ROOT / "caixa" / "locale" / "pt" / "LC_MESSAGES"
    with (locale / "caixa.po").open("rb") as f:
        po = read_po(f)
    translated = {
        (m.id if isinstance(m.id, str) else m.id[0])
        for m in po
        if m.id and (all(m.string) if isinstance(m.string, tuple) else m.string)
    }
    assert not used - translated, f"untranslated, run scripts/i18n.sh: {sorted(used - translated)}"
    with (locale / "caixa.mo").open("rb") as f:
        mo = read_mo(f)
    assert {_key(m.id) for m in po if m.id and m.string} <= {_key(m.id) for m in mo if m.id}, (
        "caixa.mo is stale: run scripts/i18n.sh"
    )


def _key(message_id: str | list[str] | tuple[str, ...]) -> str:
    return message_id if isinstance(message_id, str) else message_id[0]


def test_the_cli_speaks_portuguese_when_lang_asks(world: World) -> None:
    world.write_rules("rules:\n  - name: notes\n    inbox: in\n    steps: [text]\n")
    world.inbox()
    world.run_once()
    world.env["LANG"] = "pt_BR.UTF-8"
    said = world.caixa("status", "--home", str(world.home))
    assert said.returncode == 0, said.stderr
    assert said.stdout.startswith("tarefas: nenhuma")
    world.env["LANG"] = "en_US.UTF-8"
    assert world.caixa("status", "--home", str(world.home)).stdout.startswith("jobs: none")
