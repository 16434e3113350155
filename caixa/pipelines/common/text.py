"""Text from bytes in any common encoding, and the text a step reads: what the step before made,
or the source itself."""

from __future__ import annotations

import codecs

import charset_normalizer

from caixa.errors import InputError
from caixa.filetypes import is_text
from caixa.nofollow import read_regular
from caixa.pipelines.base import StepInput

# Legacy encodings that Portuguese and English text arrives in, tried before all others:
# short texts otherwise get exotic guesses (a cp1252 "ação" read as Urdu cp1006).
WESTERN = ["cp1252", "iso8859_15", "latin_1", "cp850", "mac_roman"]
MAX_CHAOS_PERCENT = 20.0  # charset_normalizer's "mess" above which a guess is not text
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"))  # fmt: skip


def decode(raw: bytes, encoding: str, media_type: str) -> tuple[str, str, int]:
    """Text, the encoding it was read with, and how many undecodable bytes became U+FFFD."""
    if encoding == "auto":
        encoding = next((name for bom, name in BOMS if raw.startswith(bom)), "auto")
    if encoding != "auto":
        try:
            return raw.decode(encoding), encoding, 0
        except (LookupError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the text as {encoding}: {exc}") from exc
    utf8 = raw.decode("utf-8", errors="replace")
    broken = utf8.count("\ufffd")
    if not broken:
        return utf8, "utf-8", 0
    if sum(ord(c) > 127 for c in utf8) > 2 * broken:
        # UTF-8 with a few damaged bytes: keep the text, mark the damage, say how much.
        return utf8, "utf-8", broken
    for isolation in (WESTERN, None):
        best = charset_normalizer.from_bytes(raw, cp_isolation=isolation).best()
        if (
            best is not None
            and best.percent_chaos <= MAX_CHAOS_PERCENT
            and (is_text(media_type) or isolation)
        ):
            return str(best), best.encoding, 0
    if not is_text(media_type):
        raise InputError(f"not a text file: its content is {media_type}")
    return utf8, "utf-8", broken


def input_text(job: StepInput, step: str) -> tuple[str, str]:
    """The newest text an earlier step made, else the source itself when it is text; and the
    name of the file it came from."""
    artifact = job.latest("text/plain")
    if artifact is not None:
        text = read_regular(artifact.path).decode("utf-8")  # newlines as read_text reads them
        return text.replace("\r\n", "\n").replace("\r", "\n"), artifact.name
    if is_text(job.media_type):
        return decode(read_regular(job.source), "auto", job.media_type)[0], job.source_name
    raise InputError(
        f"{step} reads text, and {job.source_name} is {job.media_type}: "
        "put an ocr or text step before it in the rule"
    )


def check_length(text: str, limit: int, step: str, what: str) -> None:
    """Refuse a text longer than a rule's `max_characters` for `step`, saying how long it is,
    how much work that would be (`what`), and how to go on."""
    if len(text) > limit:
        raise InputError(
            f"the text has {len(text):,} characters, over this rule's limit of {limit:,} for "
            f"{step} (max_characters){what}; split the file, or raise max_characters in the "
            f"rule's {step} step"
        )
