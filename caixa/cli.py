"""The `caixa` command."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from caixa import app as operations
from caixa import i18n, install, log, offline
from caixa.config import rules
from caixa.config.settings import Settings
from caixa.daemon import lanestate
from caixa.daemon.journal import TERMINAL, Journal, State
from caixa.daemon.service import Daemon
from caixa.display import json_text, shown, shown_lines
from caixa.doctor import describe
from caixa.errors import CaixaError, ExitCode, StepError, TransientError
from caixa.home import Home
from caixa.i18n import _
from caixa.pipelines.index.retrieve import Hit
from caixa.pipelines.llm.ask import markdown
from caixa.pipelines.registry import default_registry

app = typer.Typer(
    help="caixa: drop a file in an inbox, get the local AI result.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, soft_wrap=True, highlight=False)

RulesOpt = Annotated[Path | None, typer.Option("--rules", "-r", help="rules file [CAIXA_RULES]")]
HomeOpt = Annotated[Path | None, typer.Option("--home", help="journal and work area [CAIXA_HOME]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _settings(rules_path: Path | None = None, home: Path | None = None) -> Settings:
    overrides: dict[str, Any] = {}
    if rules_path is not None:
        overrides["rules"] = rules_path
    if home is not None:
        overrides["home"] = home
    return Settings(**overrides)


@app.command()
def run(
    rules_path: RulesOpt = None,
    home: HomeOpt = None,
    once: Annotated[bool, typer.Option("--once", help="process what is there, then exit")] = False,
) -> None:
    """Run the daemon in the foreground."""
    settings = _settings(rules_path, home)
    log.configure(settings.log_format, settings.log_level, settings.journal_socket)
    ruleset = rules.load(settings.rules)
    with Home(settings.home).lock():  # before the journal opens: one daemon per home
        daemon = Daemon(settings, ruleset, default_registry())
        before = daemon.journal.counts()
        if once and sys.stderr.isatty():
            with _progress_bar() as bar:
                task = bar.add_task("processing", total=None)

                def tick(d: Daemon) -> None:
                    done = _finished_since(before, d.journal.counts())
                    left = sum(d.journal.counts().get(s, 0) for s in State if s not in TERMINAL)
                    bar.update(task, completed=done, total=done + left + d.watcher.pending())

                seen = daemon.run(once=True, on_tick=tick)
        else:
            seen = daemon.run(once=once)
    if once:
        after = Journal(Home(settings.home).journal).counts()
        gained = {s: after.get(s, 0) - before.get(s, 0) for s in TERMINAL}
        err.print(
            f"caixa: {gained[State.done]} done, {gained[State.duplicate]} duplicates,"
            f" {gained[State.failed]} failed, {seen.refused} refused,"
            f" {seen.unmatched} matched no rule, {seen.waiting} wait for an unavailable step"
        )


def _near(path: Path, base: Path) -> str:
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def _finished_since(before: dict[str, int], now: dict[str, int]) -> int:
    return sum(now.get(s, 0) - before.get(s, 0) for s in TERMINAL)


def _progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )


@app.command()
def check(
    rules_path: RulesOpt = None,
    strict: Annotated[bool, typer.Option(help="fail when a step is unavailable")] = False,
) -> None:
    """Validate the rules file; say which steps are unavailable and why."""
    found = operations.check(_settings(rules_path).rules)
    ruleset = found.rules
    out.print(f"{shown(ruleset.source)}: {len(ruleset.rules)} rules valid", markup=False)
    for verdict in found.verdicts:
        rule = verdict.rule
        where = ", ".join(_near(p, ruleset.source.parent) for p in rule.inboxes)
        steps = " -> ".join(s.name for s in rule.steps)
        state = f"waits for: {', '.join(verdict.missing)}" if verdict.missing else "ready"
        line = f"  {rule.name:<12} {where:<24} {steps:<36} {state}"
        out.print(shown(line), markup=False)
    for name, reason in sorted(found.reasons.items()):
        out.print(shown(f"unavailable: {name}: {reason}"), markup=False)
    if strict and found.inactive:
        raise typer.Exit(1)


@app.command()
def explain(file: Path, rules_path: RulesOpt = None) -> None:
    """Say which rule and steps a file would get, and why the other rules would not take it."""
    found = operations.explain(file, _settings(rules_path).rules)
    if found.ignored:
        out.print(f"{shown(file)}: caixa ignores {found.reasons[0]}", markup=False)
        raise typer.Exit(1)
    for reason in found.reasons:
        out.print(f"  not {shown(reason)}", markup=False)
    rule = found.rule
    if rule is None:
        out.print(
            f"{shown(file)}: no rule takes this file; it would stay where it is", markup=False
        )
        raise typer.Exit(1)
    out.print(f"{shown(file)}: rule {shown(repr(rule.name))} takes it", markup=False)
    for i, step in enumerate(rule.steps, 1):
        out.print(
            f"  {i}. {step.name} {json_text(step.params) if step.params else ''}", markup=False
        )
    out.print(
        f"  outputs under {shown(found.outputs)}; source then: {rule.on_success}", markup=False
    )
    if not rule.active:
        out.print("  but it waits, because: " + shown("; ".join(rule.unavailable)), markup=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of rules.yaml, for editors."""
    print(json.dumps(rules.json_schema(), indent=2))


@app.command()
def status(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Jobs by state, the running steps, and recent failures with their reasons."""
    now = operations.status(_settings(home=home).home)
    if as_json:
        print(
            json.dumps(
                {
                    "counts": now.counts,
                    "running": [operations.job_json(j) for j in now.running],
                    "recent_failures": [operations.job_json(j) for j in now.recent_failures],
                    "refused": [{"path": p, "reason": r} for p, r, _seen in now.refused],
                    "lanes": now.lanes,
                    "paused": now.paused,
                },
                indent=2,
            )
        )
        return
    if now.paused:
        out.print(shown(now.paused), markup=False)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(now.counts.items()))
    out.print(_("jobs: {counts}").format(counts=counts or _("none")), markup=False)
    for line in lanestate.describe(now.lanes):
        out.print(shown(line), markup=False)
    for job in now.running:
        since = time.time() - job.updated_at
        out.print(
            shown(
                f"running: {job.id} {job.rule}/{job.running_step} on {job.name!r} ({since:.0f} s)"
            ),
            markup=False,
        )
    for job in now.recent_failures:
        error = job.error or {}
        out.print(
            shown(f"failed: {job.id} {job.name!r} at {error.get('step')}: {error.get('message')}")
            + f"\n        now at {shown(job.final_path)}; retry: caixa retry {job.id}",
            markup=False,
        )
    for path, reason, _seen in now.refused:
        out.print(f"refused: {shown(path)}: {shown(reason)}", markup=False)


@app.command()
def retry(
    job: Annotated[str | None, typer.Argument(help="job id, or a prefix of one")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="every failed job")] = False,
    home: HomeOpt = None,
) -> None:
    """Queue failed jobs again, from their first step; the daemon takes them at once."""
    if not failed and not job:
        raise typer.BadParameter("name a job, or give --failed")
    for done in operations.retry(_settings(home=home).home, None if failed else job):
        if done.queued:
            out.print(
                _("{job}: {name} queued again").format(
                    job=done.job.id, name=shown(repr(done.job.name))
                ),
                markup=False,
            )
        else:
            err.print(f"{done.job.id}: {shown(done.why)}", markup=False)


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="words or a question, PT or EN")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="hits to show")] = 10,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    rules_path: RulesOpt = None,
    drop: Annotated[
        str | None,
        typer.Option(
            "--drop", metavar="FILE|JOB", help="remove a file name or a job from the index"
        ),
    ] = None,
    prune: Annotated[
        bool, typer.Option("--prune", help="remove documents whose output folder is gone")
    ] = False,
) -> None:
    """Find indexed documents by their words and meaning, in Portuguese or English."""
    settings = _settings(rules_path, home)
    outputs = _outputs_root(settings, rules_path)
    if drop is not None or prune:
        if prune and outputs is None:
            raise typer.BadParameter(
                "--prune reads the outputs folder from the rules: give --rules"
            )
        gone = operations.forget(settings.home, drop, outputs if prune else None)
        for doc in gone:
            out.print(
                shown(f"dropped: {doc.source_name} (job {doc.job_id}, rule {doc.rule})"),
                markup=False,
            )
        if prune and not gone:
            out.print("every indexed document still has its output folder")
        return
    if not query:
        raise typer.BadParameter("give a query (or --drop / --prune)")
    results = operations.search(settings.home, query, limit, outputs)
    if as_json:
        hits = [_hit_json(h) for h in results.hits]
        print(json_text({"queries": results.queries, "note": results.note, "hits": hits}, indent=2))
        return
    if results.note:
        err.print(f"caixa: {shown(results.note)}", markup=False)
    if len(results.queries) > 1:
        err.print("searched: " + shown(" | ".join(results.queries[1:])), markup=False)
    if not results.hits:
        out.print(f"nothing found for {shown(repr(query))}", markup=False)
    for n, hit in enumerate(results.hits, 1):
        where = _near(hit.folder, Path.cwd()) if hit.folder else "(not published)"
        out.print(
            shown(f"{n}. {hit.document.source_name}  {where}  {hit.artifact} {_place(hit)}")
            + f"  score {hit.score:.4f}",
            markup=False,
        )
        out.print("   " + hit.marked("[bold]", "[/bold]", lambda s: escape(shown(s))))


def _outputs_root(settings: Settings, given: Path | None) -> Path | None:
    """The outputs root from the rules file, when there is one to read."""
    if given is None and not settings.rules.exists():
        return None
    return rules.load(settings.rules).outputs


def _place(hit: Hit) -> str:
    """`p.2` in a document, `at 03:12` in a recording."""
    return f"at {hit.place}" if hit.start is not None else f"p.{hit.page}"


def _hit_json(hit: Hit) -> dict[str, Any]:
    return {
        "file": hit.document.source_name,
        "folder": str(hit.folder) if hit.folder else None,
        "text": hit.artifact,
        "page": hit.page,
        "start": hit.start,  # seconds into a recording; null for documents
        "time": hit.place if hit.start is not None else None,
        "language": hit.language,
        "score": round(hit.score, 5),
        "snippet": hit.marked("**", "**"),
        "job": hit.document.job_id,
        "rule": hit.document.rule,
    }


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="a question, PT or EN")],
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=50, help="index passages to answer from")
    ] = 5,
    model: Annotated[
        str | None,
        typer.Option(help="packaged model or GGUF path; with --server, the server's model"),
    ] = None,
    server: Annotated[
        str | None, typer.Option(help="OpenAI-compatible API, e.g. http://127.0.0.1:11434/v1")
    ] = None,
    n_ctx: Annotated[int, typer.Option("--n-ctx", min=256, help="context tokens")] = 4096,
    max_tokens: Annotated[int, typer.Option(min=1, help="longest answer, in tokens")] = 512,
    as_json: JsonOpt = False,
    home: HomeOpt = None,
    rules_path: RulesOpt = None,
) -> None:
    """Answer a question from the indexed documents with a local LLM, citing files and pages."""
    from caixa.pipelines.llm.chat import open_model

    settings = _settings(rules_path, home)
    outputs = _outputs_root(settings, rules_path)
    try:
        found = operations.ask(
            settings.home,
            question,
            lambda: open_model(model, server, n_ctx=n_ctx, device="cuda"),
            outputs,
            passages=limit,
            max_tokens=max_tokens,
        )
    except (StepError, TransientError) as exc:
        err.print(f"caixa: {shown_lines(str(exc))}", markup=False)
        raise typer.Exit(1) from exc
    if as_json:
        done = found.generation
        print(
            json_text(
                {
                    "question": found.question,
                    "answer": found.text,
                    "sources": [s.to_json() for s in found.sources],
                    "cited": found.cited,
                    "model": found.model,
                    "prompt_tokens": done.prompt_tokens if done else 0,
                    "completion_tokens": done.completion_tokens if done else 0,
                },
                indent=2,
            )
        )
        return
    out.print(shown_lines(markdown(found)), end="", markup=False)


@app.command()
def doctor(rules_path: RulesOpt = None, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """What caixa will run, and where, on this machine and these rules; how to fix problems."""
    settings = _settings(rules_path, home)
    report = operations.doctor(settings.rules, settings.home)
    if as_json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        out.print(shown_lines("\n".join(describe(report))), markup=False)
    if not report.ok:
        raise typer.Exit(ExitCode.doctor_problems)


@app.command()
def web(
    host: Annotated[
        str, typer.Option(help="address to listen on; not loopback needs a password")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8484,
    rules_path: RulesOpt = None,
    home: HomeOpt = None,
) -> None:
    """Serve the page: overview, jobs, failed and retry, search, ask, drop, rules [CAIXA_WEB_*]."""
    from caixa.web.server import serve

    settings = _settings(rules_path, home)
    Home(settings.home).require_used()
    serve(settings, host, port)


@app.command("install-service")
def install_service(
    user: Annotated[bool, typer.Option("--user", help="a unit for `systemctl --user`")] = False,
    rules_path: RulesOpt = None,
    home: Annotated[
        Path | None,
        typer.Option("--home", help="default: /var/lib/caixa, or CAIXA_HOME with --user"),
    ] = None,
    show: Annotated[
        bool, typer.Option("--print", "--dry-run", help="print the unit and drop-in; write nothing")
    ] = False,
    unit_dir: Annotated[
        Path | None,
        typer.Option(help="write here, not in /etc/systemd/system (~/.config/systemd/user)"),
    ] = None,
    web: Annotated[
        bool, typer.Option("--web", help="also a unit for the page, `caixa web` (caixa-web)")
    ] = False,
) -> None:
    """Write a systemd unit with this machine's paths, and say the systemctl commands to run."""
    layout = install.plan(_settings(rules_path), user, home)
    if show:
        out.print(install.render_unit(layout), end="", markup=False)
        out.print("\n# caixa.service.d/settings.conf", markup=False)
        out.print(install.render_dropin(dict(os.environ)), end="", markup=False)
        if web:
            out.print("\n# caixa-web.service", markup=False)
            out.print(install.render_web_unit(layout), end="", markup=False)
        return
    written = install.install(layout, unit_dir or install.unit_dir(user), dict(os.environ), web=web)
    out.print("wrote " + ", ".join(map(str, written)) + "\nnow run:", markup=False)
    for line in install.next_steps(layout, web):
        out.print(f"  {line}", markup=False)


def main() -> None:
    offline.enforce()
    i18n.current.set(i18n.from_environment())
    try:
        app()
    except CaixaError as exc:
        err.print(f"caixa: {shown_lines(str(exc))}", markup=False, highlight=False)
        sys.exit(exc.exit_code)
