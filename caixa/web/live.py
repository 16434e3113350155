"""What changes while a page is open, sent as server-sent events: the overview and the latest
jobs (htmx's SSE extension swaps each fragment in), and an answer as the model writes it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from caixa import app, i18n
from caixa.display import shown_lines
from caixa.errors import CaixaError, StepError, TransientError
from caixa.web import pages
from caixa.web.site import Site, language_of

EVERY = 1.0  # seconds between two looks at the journal

FRAGMENTS: dict[str, tuple[str, Callable[[Site], dict[str, Any]]]] = {
    "overview": ("_overview.html", pages.overview_context),
    "recent": ("_recent.html", pages.recent_context),
}


def event(name: str, data: str) -> str:
    lines = data.splitlines() or [""]
    return f"event: {name}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def fragments(request: Request) -> Response:
    """`/events/{name}`: the fragment again each time it changes, until the page goes."""
    site: Site = request.app.state.site
    try:
        template, context = FRAGMENTS[request.path_params["name"]]
    except KeyError:
        raise HTTPException(404, "no such stream") from None
    language = language_of(request)

    def render() -> str:
        i18n.current.set(language)
        return site.templates.get_template(template).render(lang=language, **context(site))

    async def stream() -> AsyncIterator[str]:
        last = None
        while not await request.is_disconnected():
            html = await run_in_threadpool(render)
            if html != last:
                yield event(request.path_params["name"], html)
                last = html
            await asyncio.sleep(EVERY)

    return StreamingResponse(stream(), media_type="text/event-stream")


async def answer_stream(request: Request) -> Response:
    """`/ask/stream?q=`: the answer's text as it is written ("text" events), then the whole
    answer with its sources ("done"), or what went wrong ("problem")."""
    site: Site = request.app.state.site
    question = (request.query_params.get("q") or "").strip()
    language = language_of(request)
    if not question:
        raise HTTPException(400, "ask a question")
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def said(text: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("text", json.dumps(shown_lines(text))))

    def work() -> None:
        i18n.current.set(language)
        try:
            found = app.ask(site.home, question, site.chat, on_text=said)
            html = site.templates.get_template("_answer.html").render(
                found=found, href=pages.output_href, lang=language
            )
            loop.call_soon_threadsafe(queue.put_nowait, ("done", html))
        except (CaixaError, StepError, TransientError, OSError) as exc:
            loop.call_soon_threadsafe(queue.put_nowait, ("problem", shown_lines(str(exc))))

    async def stream() -> AsyncIterator[str]:
        working = asyncio.ensure_future(site.in_models_thread(work))
        while True:
            name, data = await queue.get()
            yield event(name, data)
            if name in ("done", "problem"):
                await working
                return

    return StreamingResponse(stream(), media_type="text/event-stream")
