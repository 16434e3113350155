"""`caixa web`: the page, in its own process. The daemon keeps its tight sandbox and never
waits on a browser; this process reads the journal and the index and calls caixa.app."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from caixa import app as operations
from caixa.config.settings import Settings
from caixa.errors import HomeUnusableError
from caixa.web import live, pages
from caixa.web.security import Headers, check_bind
from caixa.web.site import Site

STATIC = Path(__file__).parent / "static"
OPEN_PATHS = ("/login", "/static/", "/lang/")  # reached without logging in


class LoginRequired:
    """With a password set, every page but the login asks for a logged-in session."""

    def __init__(self, app: Any, site: Site) -> None:
        self.app = app
        self.site = site

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (
            scope["type"] == "http"
            and self.site.password
            and not scope["path"].startswith(OPEN_PATHS)
            and not scope.get("session", {}).get("auth")
        ):
            await RedirectResponse("/login", status_code=303)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(site: Site, secret: str | None = None) -> Starlette:
    routes = [
        Route("/", pages.overview),
        Route("/events/{name}", live.fragments),
        Route("/jobs", pages.jobs_list),
        Route("/jobs/{job_id}", pages.job_page),
        Route("/jobs/{job_id}/source", pages.job_source),
        Route("/out/{path:path}", pages.output_file),
        Route("/failed", pages.failed_page),
        Route("/failed/retry", pages.retry, methods=["POST"]),
        Route("/search", pages.search_page),
        Route("/ask", pages.ask_page),
        Route("/ask/stream", live.answer_stream),
        Route("/drop", pages.drop_page),
        Route("/drop", pages.drop_file, methods=["POST"]),
        Route("/rules", pages.rules_page),
        Route("/system", pages.system_page),
        Route("/lang/{lang}", pages.set_language),
        Route("/login", pages.login, methods=["GET", "POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    web = Starlette(
        routes=routes,
        middleware=[
            Middleware(Headers),
            Middleware(
                SessionMiddleware,
                secret_key=secret or secrets.token_urlsafe(32),
                session_cookie="caixa_session",
                same_site="strict",
                max_age=7 * 86400,
            ),
            Middleware(LoginRequired, site=site),
        ],
        exception_handlers={HTTPException: _problem, HomeUnusableError: _problem},
    )
    web.state.site = site
    return web


async def _problem(request: Request, exc: Exception) -> Response:
    site: Site = request.app.state.site
    status = exc.status_code if isinstance(exc, HTTPException) else 503
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    return site.render(request, "problem.html", status=status, code=status, detail=detail)


def warm(site: Site) -> None:
    """Load the search's embedder and translator now, not at the first search."""
    try:
        operations.search(site.home, "caixa", 1)
    except Exception as exc:  # a view only: the first search says what is wrong
        logging.getLogger("caixa.web").info("search not warmed: %s", exc)


def serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    password = settings.web_password.get_secret_value() if settings.web_password else None
    check_bind(host, password)
    site = Site(
        home=settings.home.absolute(),
        rules_path=settings.rules.absolute(),
        password=password,
        max_upload_bytes=settings.web_max_upload_mb * 2**20,
    )
    site.models.submit(warm, site)
    shown = f"[{host}]" if ":" in host else host
    print(f"caixa web: open http://{shown}:{port}/ (home {site.home})", flush=True)
    uvicorn.run(
        create_app(site),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=2,
        server_header=False,
    )
