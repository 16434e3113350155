"""Which language a text is written in, as an ISO 639-1 code and a confidence.

py3langid (a maintained langid.py: naive Bayes over byte n-grams, numpy only). Measured on 200
Portuguese and English texts (2-4 word lines, sentences, paragraphs, OCR-damaged text) plus 40
in Spanish, French, Italian and German, with the same 12 candidate languages, it was as accurate
as lingua in its high-accuracy mode (232 vs 234 of 240 right; both 100% on sentences,
paragraphs and OCR text, the misses being 2-4 word lines) with a third of the memory (97 vs
338 MB) and a third of the load time (0.7 vs 2.1 s); lingua's low-accuracy mode is small but
misses a quarter of the short lines. Fewer candidates make short texts safer: a search query
checked against English and Portuguese only was right 80 times out of 80.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import re
import shutil
import tempfile
import zipfile
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from caixa import models
from caixa.home import Home
from caixa.pipelines.common.files import remove_earlier

if TYPE_CHECKING:
    import numpy as np
    from py3langid.langid import LanguageIdentifier

MODULE = "py3langid"  # the detector: a step that detects requires it, and names it as a model
PROBABILITIES = {"norm_probs": True}  # a softmax over the candidates, not raw log scores

# The languages caixa translates out of the box and the common ones a user's argos models add:
# enough to tell Spanish from Portuguese, few enough that a short line is not read as Catalan.
COMMON = ("en", "pt", "es", "fr", "de", "it", "nl", "pl", "ru", "zh", "ja", "ar")


@dataclass(frozen=True)
class Detection:
    language: str  # ISO 639-1, e.g. "pt"
    confidence: float  # probability among the candidates, 0..1


def detect(text: str, candidates: Iterable[str] = COMMON, home: Path | None = None) -> Detection:
    """The most likely of `candidates` (codes py3langid does not know are ignored). With
    caixa's `home`, the detector loads from tables kept unpacked there (`_from_unpacked`)."""
    identifier = _identifier(home)
    allowed = set(candidates) & set(identifier.nb_classes)
    if not allowed:
        raise ValueError(f"no known language among {sorted(set(candidates))}")
    ranked = [(lang, p) for lang, p in identifier.rank(text) if lang in allowed]
    total = sum(p for _, p in ranked)
    language, p = ranked[0]
    return Detection(language, round(p / total, 4) if total > 0 else 0.0)


NAMES = {
    "en": "English", "pt": "Portuguese", "es": "Spanish", "fr": "French", "de": "German",
    "it": "Italian", "nl": "Dutch", "pl": "Polish", "ru": "Russian", "zh": "Chinese",
    "ja": "Japanese", "ar": "Arabic", "ca": "Catalan", "gl": "Galician",
}  # fmt: skip


def name(code: str) -> str:
    """The language's English name, for a prompt (a model reads "Portuguese" better than "pt")."""
    return NAMES.get(code, code)


def code(value: str, auto: bool = False) -> str:
    """A language code as a rule gives it (" PT" -> "pt"); with `auto`, "auto" too."""
    found = value.strip().lower()
    if not (re.fullmatch(r"[a-z]{2,3}", found) or (auto and found == "auto")):
        raise ValueError(f"{value!r}: give a language code such as en or pt (ISO 639-1)")
    return found


def _identifier(home: Path | None) -> LanguageIdentifier:
    def load() -> LanguageIdentifier:
        from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

        packed = MODEL_DIR / MODEL_FILE
        found = _from_unpacked(packed, Home(home).models) if home is not None else None
        return found or LanguageIdentifier.from_model_file(packed, **PROBABILITIES)

    return models.load(MODULE, load)


def _from_unpacked(packed: Path, folder: Path) -> LanguageIdentifier | None:
    """The detector as py3langid's own loader makes it, from an uncompressed copy of its model
    kept under `folder` (made the first time): 0.08 s, where unpacking the packaged LZMA file
    takes 0.4 s in every process that detects (each worker, each `caixa search`). None when
    the copy cannot be made or read (a home this user may not write; a copy cut short by a
    crash, which is removed so that the next process makes it again)."""
    import numpy as np
    from py3langid.langid import LanguageIdentifier

    try:
        copy = folder / f"py3langid-{metadata.version(MODULE)}-{packed.stat().st_size}.npz"
        if not copy.exists() and not _unpack(packed, copy):
            return None
        with np.load(copy, allow_pickle=False) as data:
            return LanguageIdentifier(
                data["ptc"],
                data["pc"],
                data["classes"].tolist(),
                _ints(data["nextmove"]),
                data["out_feat"].tolist(),
                tk_row=_ints(data["nextmove_row"]),
                **PROBABILITIES,
            )
    except (ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):  # not what we wrote
        with contextlib.suppress(OSError):
            copy.unlink()
        return None
    except (OSError, metadata.PackageNotFoundError):  # unreadable here: the package's file
        return None


def _ints(values: np.ndarray) -> array:
    """A numpy array of unsigned ints as the stdlib array py3langid's state machine walks."""
    import numpy as np

    out = array({2: "H", 4: "I", 8: "L"}[values.dtype.itemsize])
    out.frombytes(memoryview(np.ascontiguousarray(values)).cast("B"))  # one copy, not two
    return out


def _unpack(packed: Path, copy: Path) -> bool:
    """Write the model's uncompressed copy, whole or not at all (renamed into place). What
    earlier ones left is removed first, 68 MB each: copies for another py3langid, and a
    scratch file that a crash left half written (one that old is no other process's)."""
    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        remove_earlier(copy, copy.parent.glob("*py3langid-*.npz*"))
        fd, scratch = tempfile.mkstemp(prefix=f".{copy.name}.", dir=copy.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as out, lzma.open(packed) as src:
            shutil.copyfileobj(src, out, length=1 << 20)
            os.fchmod(out.fileno(), 0o644)  # a `caixa search` run by another user reads it too
        os.replace(scratch, copy)
        return True
    except (OSError, lzma.LZMAError):
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(scratch)
