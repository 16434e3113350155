"""The pages: each reads through caixa.app (the same operations as the CLI) and renders a
template. Handlers that touch the disk are plain functions: Starlette runs them in threads."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from caixa import app, i18n
from caixa.daemon.journal import State, status_line
from caixa.display import shown
from caixa.errors import CaixaError
from caixa.web import drop as dropping
from caixa.web import files
from caixa.web.security import (
    FILE_POLICY,
    SANDBOXED_FILE_POLICY,
    LoginLimiter,
    check_csrf,
    password_matches,
)
from caixa.web.site import LANG_COOKIE, Site, free_space

PER_PAGE = 50
limiter = LoginLimiter()


def site_of(request: Request) -> Site:
    return request.app.state.site


# --- the overview --------------------------------------------------------------------------


def overview_context(site: Site) -> dict[str, Any]:
    now = app.status(site.home, failures=5)
    rules = site.rules_or_none()
    places = [site.home]
    if rules is not None:
        places += [rules.outputs, *rules.inboxes()]
    lanes = now.lanes
    return {
        "counts": now.counts,
        "total": sum(now.counts.values()),
        "status_line": status_line(now.counts, i18n._),
        "running": now.running,
        "failures": now.recent_failures,
        "lanes": lanes,
        "step_rates": sorted((lanes or {}).get("steps", {}).items()),
        "disks": free_space(places),
        "now": time.time(),
    }


def overview(request: Request) -> Response:
    site = site_of(request)
    return site.render(request, "overview.html", **overview_context(site))


def recent_context(site: Site) -> dict[str, Any]:
    return {"recent": app.jobs(site.home, per_page=10).jobs, "now": time.time()}


# --- jobs ------------------------------------------------------------------------------------


def _day(text: str | None, end: bool = False) -> float | None:
    """A yyyy-mm-dd from a date field as a local timestamp (the next midnight for `end`)."""
    if not text:
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise HTTPException(400, f"not a date: {text!r} (yyyy-mm-dd)") from None
    if end:
        day += dt.timedelta(days=1)
    return time.mktime(day.timetuple())


def jobs_list(request: Request) -> Response:
    site = site_of(request)
    q = request.query_params
    state = q.get("state") or None
    if state is not None and state not in State.__members__:
        raise HTTPException(400, f"unknown state {state!r}")
    sort = q.get("sort") or "newest"
    if sort not in app.SORTS:
        raise HTTPException(400, f"unknown sort {sort!r}")
    try:
        page = max(1, int(q.get("page") or 1))
    except ValueError:
        page = 1
    found = app.jobs(
        site.home,
        state=state,
        rule=q.get("rule") or None,
        name=q.get("name") or None,
        since=_day(q.get("since")),
        until=_day(q.get("until"), end=True),
        sort=sort,
        page=page,
        per_page=PER_PAGE,
    )
    rules = site.rules_or_none()
    names = sorted({r.name for r in rules.rules}) if rules else []
    filters = {k: q.get(k, "") for k in ("state", "rule", "name", "since", "until", "sort")}
    return site.render(
        request,
        "jobs.html",
        found=found,
        rules=names,
        filters=filters,
        sorts=list(app.SORTS),
        paging=lambda n: _with_page(request, n),
        now=time.time(),
    )


def _with_page(request: Request, page: int) -> str:
    params = dict(request.query_params)
    params["page"] = str(page)
    return "/jobs?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in params.items() if v)


def job_page(request: Request) -> Response:
    site = site_of(request)
    rules = site.rules_or_none()
    outputs = rules.outputs if rules else None
    try:
        detail = app.job(site.home, request.path_params["job_id"], outputs)
    except CaixaError:
        raise HTTPException(404, "no such job") from None
    readable = []
    if detail.folder is not None and detail.manifest is not None and outputs is not None:
        rel = detail.job.output_dir or ""
        for name in detail.manifest.get("outputs", []):
            try:
                path = files.inside(outputs, f"{rel}/{name}")
            except (files.RefusedError, OSError):
                continue
            readable.append(files.shown(path, output_href(rel, name)))
    made = [s.result.get("data", {}) for s in detail.steps if s.result]
    generated = next((d for d in made if "prompt" in d and "seed" in d), None)
    return site.render(
        request,
        "job.html",
        detail=detail,
        job=detail.job,
        outputs=readable,
        generated=generated,
        has_source=_source(site, detail.job.final_path) is not None,
        now=time.time(),
    )


def output_href(folder: str, name: str) -> str:
    return "/out/" + "/".join(quote(p, safe="") for p in [*folder.split("/"), name])


def _source(site: Site, final_path: str | None) -> Path | None:
    """A job's source where it now lies, when that is under processed/ or failed/."""
    rules = site.rules_or_none()
    if not final_path or rules is None:
        return None
    path = Path(final_path)
    for root in (rules.processed, rules.failed):
        if path.is_relative_to(root):
            try:
                return files.inside(root, str(path.relative_to(root)))
            except (files.RefusedError, OSError):
                return None
    return None


def job_source(request: Request) -> Response:
    site = site_of(request)
    try:
        detail = app.job(site.home, request.path_params["job_id"])
    except CaixaError:
        raise HTTPException(404, "no such job") from None
    path = _source(site, detail.job.final_path)
    if path is None:
        raise HTTPException(404, "this job's source is not kept under processed/ or failed/")
    return _file(path)


def output_file(request: Request) -> Response:
    site = site_of(request)
    rules = site.rules_or_none()
    if rules is None:
        raise HTTPException(404, "the rules file cannot be read, so neither can its outputs")
    try:
        files.check_raw(request.scope.get("raw_path") or b"")
        path = files.inside(rules.outputs, request.path_params["path"])
    except files.RefusedError as exc:
        raise HTTPException(400, f"refused: {exc}") from None
    except OSError:
        raise HTTPException(404, "no such output") from None
    return _file(path)


def _file(path: Path) -> Response:
    media = files.media_type(path.name)
    policy = FILE_POLICY if media == "application/pdf" else SANDBOXED_FILE_POLICY
    headers = {"content-security-policy": policy, "cache-control": "private, max-age=60"}
    if media is None:
        return FileResponse(
            path,
            media_type="application/octet-stream",
            filename=path.name,
            headers=headers,
        )
    headers["content-disposition"] = f"inline; filename*=utf-8''{quote(path.name)}"
    return FileResponse(path, media_type=media, headers=headers)


# --- failed and retry ------------------------------------------------------------------------


def failed_page(request: Request) -> Response:
    site = site_of(request)
    try:
        page = max(1, int(request.query_params.get("page") or 1))
    except ValueError:
        page = 1
    found = app.jobs(site.home, state=State.failed, sort="updated", page=page, per_page=PER_PAGE)
    by_rule = app.failed_by_rule(site.home)
    return site.render(
        request,
        "failed.html",
        found=found,
        by_rule=by_rule,
        retried=request.query_params.get("retried"),
        paging=lambda n: f"/failed?page={n}",
    )


async def retry(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, str(form.get("csrf") or ""))
    site = site_of(request)
    job_id = str(form.get("job") or "") or None
    rule = str(form.get("rule") or "") or None
    if job_id is None and rule is None:
        raise HTTPException(400, "name a job or a rule to retry")
    try:
        done = await run_in_threadpool(app.retry, site.home, job_id, None if job_id else rule)
    except CaixaError as exc:
        raise HTTPException(404, str(exc)) from None
    queued = sum(d.queued for d in done)
    return RedirectResponse(f"/failed?retried={queued}", status_code=303)


# --- search ----------------------------------------------------------------------------------


async def search_page(request: Request) -> Response:
    site = site_of(request)
    query = (request.query_params.get("q") or "").strip()
    results, problem = None, None
    if query:
        try:
            results = await site.in_models_thread(app.search, site.home, query, 10)
        except CaixaError as exc:
            problem = str(exc)
    return site.render(
        request,
        "search.html",
        q=query,
        results=results,
        problem=problem,
        href=lambda hit: output_href(str(hit.folder), hit.artifact) if hit.folder else None,
        snippet=lambda hit: Markup(hit.marked("<mark>", "</mark>", lambda s: escape(shown(s)))),
    )


# --- drop --------------------------------------------------------------------------------


def inboxes(site: Site) -> list[tuple[str, Path]]:
    """Each rule's inboxes, as the Drop page offers them: (rule, folder)."""
    rules = site.rules_or_none()
    if rules is None:
        return []
    return [(r.name, inbox) for r in rules.rules for inbox in r.inboxes]


def drop_page(request: Request) -> Response:
    site = site_of(request)
    return site.render(
        request,
        "drop.html",
        inboxes=inboxes(site),
        max_mb=site.max_upload_bytes // 2**20,
        **recent_context(site),
    )


async def drop_file(request: Request) -> Response:
    check_csrf(request, None)
    site = site_of(request)
    choices = inboxes(site)
    try:
        _, inbox = choices[int(request.query_params.get("inbox", ""))]
    except (ValueError, IndexError):
        raise HTTPException(400, "choose one of the inboxes the page offers") from None
    name = request.query_params.get("name") or "upload"
    if not inbox.is_dir():
        inbox.mkdir(parents=True, exist_ok=True)
    try:
        landed = await dropping.receive(inbox, name, request.stream(), site.max_upload_bytes)
    except dropping.TooLargeError as exc:
        raise HTTPException(413, str(exc)) from None
    return JSONResponse({"name": landed.name, "inbox": str(inbox)}, status_code=201)


# --- rules, language, login ---------------------------------------------------------------


def rules_page(request: Request) -> Response:
    site = site_of(request)
    try:
        found, problem = app.check(site.rules_path), None
    except (CaixaError, OSError) as exc:
        found, problem = None, str(exc)
    return site.render(request, "rules.html", check=found, problem=problem)


def set_language(request: Request) -> Response:
    language = i18n.supported(request.path_params["lang"]) or i18n.DEFAULT
    back = request.query_params.get("next") or "/"
    if not back.startswith("/") or back.startswith("//") or "\\" in back:
        back = "/"
    response = RedirectResponse(back, status_code=303)
    response.set_cookie(
        LANG_COOKIE, language, max_age=365 * 86400, samesite="strict", httponly=True
    )
    return response


async def login(request: Request) -> Response:
    site = site_of(request)
    if request.method == "GET":
        return site.render(request, "login.html", wrong=False, wait=0)
    who = request.client.host if request.client else "?"
    wait = limiter.blocked(who)
    if wait:
        return site.render(request, "login.html", status=429, wrong=False, wait=round(wait))
    form = await request.form()
    check_csrf(request, str(form.get("csrf") or ""))
    if site.password and password_matches(str(form.get("password") or ""), site.password):
        limiter.passed(who)
        request.session["auth"] = True
        return RedirectResponse("/", status_code=303)
    limiter.failed(who)
    return site.render(request, "login.html", status=401, wrong=True, wait=0)


async def logout(request: Request) -> Response:
    form = await request.form()
    check_csrf(request, str(form.get("csrf") or ""))
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# --- ask and the system --------------------------------------------------------------------


def ask_page(request: Request) -> Response:
    site = site_of(request)
    return site.render(request, "ask.html", q=(request.query_params.get("q") or "").strip())


def system_page(request: Request) -> Response:
    """`caixa doctor`'s report, what `check` says of the rules, and free space."""
    site = site_of(request)
    report, problem = None, None
    try:
        report = app.doctor(site.rules_path, site.home).to_json()
    except (CaixaError, OSError) as exc:
        problem = str(exc)
    try:
        found = app.check(site.rules_path)
    except (CaixaError, OSError) as exc:
        found, problem = None, problem or str(exc)
    rules = site.rules_or_none()
    places = [site.home] + ([rules.outputs, *rules.inboxes()] if rules else [])
    return site.render(
        request,
        "system.html",
        report=report,
        check=found,
        problem=problem,
        disks=free_space(places),
    )
