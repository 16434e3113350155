"""The text step reads what people actually save: UTF-8, UTF-16, Windows-1252, damaged bytes."""

from __future__ import annotations

import pytest

from caixa import filetypes
from caixa.errors import InputError
from caixa.pipelines.common.text import decode

PT = "Olá! A reunião de terça-feira: pão, café, açúcar e maçãs. Coração em ação.\n"


@pytest.mark.parametrize(
    ("raw", "encoding"),
    [
        (PT.encode(), "utf-8"),
        (PT.encode("utf-8-sig"), "utf-8-sig"),
        (PT.encode("utf-16"), "utf-16"),
        (PT.encode("cp1252"), "cp1252"),
        ("Ação!\n".encode("cp1252"), "cp1252"),  # short: detectors guess wildly here
        ("Ação €5\n".encode("cp1252"), "cp1252"),
    ],
)
def test_encodings_people_use(raw: bytes, encoding: str) -> None:
    text, used, replaced = decode(raw, "auto", "text/plain")
    assert text.replace("\ufeff", "") == raw.decode(encoding).replace("\ufeff", "")
    assert replaced == 0
    assert used.replace("_", "").replace("-", "").lower() in encoding.replace("-", "")


def test_damaged_utf8_keeps_the_text_and_counts_the_damage() -> None:
    raw = PT.encode() + b"\xc3\x28 fim"
    text, used, replaced = decode(raw, "auto", "text/plain")
    assert (text.startswith(PT), used, replaced) == (True, "utf-8", 1)


def test_binary_is_not_text() -> None:
    with pytest.raises(InputError, match="not a text file: its content is image/png"):
        decode(bytes(range(256)) * 4, "auto", "image/png")


def test_an_explicit_encoding_is_obeyed_or_refused_clearly() -> None:
    assert decode("é".encode("latin-1"), "latin-1", "text/plain")[0] == "é"
    with pytest.raises(InputError, match="cannot read the text as utf-8"):
        decode(b"\xff", "utf-8", "text/plain")
    with pytest.raises(InputError, match="cannot read the text as klingon"):
        decode(b"x", "klingon", "text/plain")


def test_a_saved_mail_is_text(tmp_path) -> None:
    """libmagic calls a file with From:/Subject: headers message/rfc822; it is still text."""
    mail = tmp_path / "jantar.txt"
    mail.write_text("From: Ana <ana@example.org>\nSubject: Jantar\n\nVens no sábado?\n")
    media_type = filetypes.sniff(mail)
    assert media_type == "message/rfc822" and filetypes.is_text(media_type)
    assert decode(mail.read_bytes(), "auto", media_type)[0].endswith("Vens no sábado?\n")
