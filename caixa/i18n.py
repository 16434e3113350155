"""Portuguese and English, through gettext catalogs (caixa/locale/<lang>/LC_MESSAGES/caixa.po,
made and compiled with Babel; `scripts/i18n.sh` extracts and compiles them). The CLI speaks the
language of LC_ALL / LC_MESSAGES / LANG; the page the one its cookie or Accept-Language asks
for. Strings are written in English: English is the catalogs' source, Portuguese the other.
"""

from __future__ import annotations

import gettext
import os
from contextvars import ContextVar
from functools import cache
from pathlib import Path

LOCALES = Path(__file__).parent / "locale"
DOMAIN = "caixa"
LANGUAGES = ("en", "pt")
DEFAULT = "en"

# The language of what is being written now: the CLI's at start, a page's for its request.
current: ContextVar[str] = ContextVar("caixa_language", default=DEFAULT)


@cache
def catalog(language: str) -> gettext.NullTranslations:
    """The compiled catalog of a language; English reads the source strings as they are."""
    return gettext.translation(DOMAIN, LOCALES, [language], fallback=True)


def _(message: str) -> str:
    """`message` in the current language."""
    return catalog(current.get()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return catalog(current.get()).ngettext(singular, plural, n)


def supported(tag: str | None) -> str | None:
    """`pt_BR.UTF-8`, `pt-PT` or `en-GB` as one of LANGUAGES, or None."""
    if not tag:
        return None
    base = tag.replace("-", "_").split("_", 1)[0].split(".", 1)[0].strip().lower()
    return base if base in LANGUAGES else None


def from_environment(environ: dict[str, str] | None = None) -> str:
    """The CLI's language, as gettext chooses it: the first of LC_ALL, LC_MESSAGES, LANG set."""
    env = os.environ if environ is None else environ
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        if env.get(var):
            return supported(env[var]) or DEFAULT
    return DEFAULT


def from_accept_language(header: str | None) -> str | None:
    """The best of LANGUAGES that an Accept-Language header asks for, or None."""
    ranked = []
    for n, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if (language := supported(tag)) and q > 0:
            ranked.append((-q, n, language))
    return min(ranked)[2] if ranked else None
