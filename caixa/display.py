"""Names and text from files, made safe to show a person.

Whoever drops a file chooses its name and its words, and those reach terminals (every CLI
command, the console log) and the web page. A name such as `title\\x1b]0;pwned\\x07.txt`
would otherwise set the terminal's title, a newline would forge a line of output, and a
right-to-left override would show `invoice\\u202etxt.exe` as `invoiceexe.txt`. `shown` is the
one place that decides what is escaped; everything that prints a name, a path, a label or a
snippet goes through it. JSON output keeps the exact text, escaped the JSON way (`json_text`).
"""

from __future__ import annotations

import json
import re
from typing import Any

# C0 controls, DEL and C1 controls; the bidi embeddings, overrides, isolates and marks that
# reorder what follows them; the line and paragraph separators; lone surrogates (the bytes of
# a name that is not UTF-8, as os.fsdecode keeps them).
UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
# What json.dumps(ensure_ascii=False) leaves as it is; it escapes C0 controls itself, and the
# line breaks of its indentation are its own.
_UNSAFE_IN_JSON = re.compile(
    "[\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(found: re.Match[str]) -> str:
    char = found.group()
    code = ord(char)
    if char in NAMED:
        return NAMED[char]
    if code < 0x100:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte, shown as the byte it was
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def shown(text: object) -> str:
    """`text` (a name, a path, a label, a snippet) with every character that a terminal
    obeys or that reorders a line written as an escape: `\\x1b`, `\\n`, `\\u202e`, `\\xff`.
    Backslashes are left as they are, so ordinary names read as they are."""
    return UNSAFE.sub(_escaped, str(text))


def shown_lines(text: str) -> str:
    """Several lines (an answer, a message): each line `shown`, the line breaks kept."""
    return "\n".join(shown(line) for line in text.split("\n"))


def json_text(data: Any, **options: Any) -> str:
    """JSON that keeps accents readable (not `\\u00e7`) yet escapes, the JSON way, what
    `shown` escapes: a terminal shows it safely, and a program reads the exact text."""
    text = json.dumps(data, ensure_ascii=False, **options)  # C0 controls escaped already
    return _UNSAFE_IN_JSON.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def legible(text: str) -> str:
    """A name that is not UTF-8 (its undecodable bytes kept as lone surrogates by
    os.fsdecode) read the way such names are mostly written, as Windows-1252 (old Windows,
    Samba shares, zip files): `relat\\xf3rio.pdf` -> `relatório.pdf`. Valid names are
    returned unchanged. The journal, the index and every JSON file hold text, never such bytes."""
    if not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    raw = text.encode("utf-8", "surrogateescape")
    out: list[str] = []
    at = 0
    while at < len(raw):
        try:
            out.append(raw[at:].decode("utf-8"))
            break
        except UnicodeDecodeError as exc:
            out.append(raw[at : at + exc.start].decode("utf-8"))
            bad = raw[at + exc.start : at + exc.end]
            out.append("".join(_cp1252(bytes([b])) for b in bad))
            at += exc.end
    return "".join(out)


def _cp1252(byte: bytes) -> str:
    try:
        return byte.decode("cp1252")
    except UnicodeDecodeError:
        return byte.decode("latin-1")
