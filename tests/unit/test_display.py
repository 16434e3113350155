"""What a hostile name looks like once caixa shows it: every character a terminal obeys or
that reorders a line is escaped, ordinary names (accents, spaces, backslashes) are not."""

from __future__ import annotations

import json
import os
import unicodedata

from caixa.display import json_text, legible, shown, shown_lines


def test_controls_escapes_and_bidi_are_shown_escaped() -> None:
    assert shown("title\x1b]0;pwned\x07.txt") == "title\\x1b]0;pwned\\x07.txt"
    assert shown("a\nb\rc\td") == "a\\nb\\rc\\td"
    assert shown("invoice\u202etxt.exe") == "invoice\\u202etxt.exe"
    assert shown("x\u2066y\u2069\u200f") == "x\\u2066y\\u2069\\u200f"
    assert shown("c1\x9b31m del\x7f nul\x00") == "c1\\x9b31m del\\x7f nul\\x00"
    assert shown("line\u2028sep") == "line\\u2028sep"


def test_undecodable_bytes_are_shown_as_the_bytes_they_were() -> None:
    assert shown(os.fsdecode(b"mau-\xff\xfe.txt")) == "mau-\\xff\\xfe.txt"


def test_ordinary_names_are_left_as_they_are() -> None:
    for name in ["relatório anual.pdf", "C:\\scans\\fatura.pdf", "日本語.txt", "a'b\"c.txt"]:
        assert shown(name) == name


def test_nothing_a_terminal_obeys_survives_any_character() -> None:
    every = "".join(chr(c) for c in range(0x3000)) + os.fsdecode(bytes(range(0x80, 0x100)))
    out = shown(every)
    assert not [c for c in out if unicodedata.category(c) in ("Cc", "Cs") or c in "\u202e\u2066"]
    assert shown(out) == out  # showing twice changes nothing


def test_lines_keep_their_breaks_and_escape_the_rest() -> None:
    assert shown_lines("# q\x1b[2J\nanswer\r\n") == "# q\\x1b[2J\nanswer\\r\n"


def test_json_stays_exact_for_programs_and_safe_for_terminals() -> None:
    data = {"file": "ação\x1b]0;x\x07\u202e\x9b\x7f.txt", "n": 1}
    text = json_text(data, indent=2)
    assert json.loads(text) == data
    assert "ação" in text  # accents readable, not \u00e7
    assert not [c for c in text if unicodedata.category(c) == "Cc" and c != "\n"]
    assert "\u202e" not in text


def test_names_that_are_not_utf8_read_as_windows_1252() -> None:
    assert legible(os.fsdecode(b"relat\xf3rio \x80.pdf")) == "relatório €.pdf"
    assert legible(os.fsdecode("ação-".encode() + b"\xe7")) == "ação-ç"
    assert legible("já é texto.txt") == "já é texto.txt"
