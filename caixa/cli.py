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

from caixa import install, log, offline, rules
from caixa import search as searching
from caixa.daemon import lanestate
from caixa.daemon.journal import TERMINAL, Job, Journal, State
from caixa.daemon.outputs import error_file
from caixa.daemon.service import Daemon
from caixa.daemon.watcher import TEMP_PATTERNS, is_temp_name
from caixa.daemon.workarea import WorkArea
from caixa.errors import CaixaError, ExitCode, JobNotFoundError
from caixa.pipelines.registry import default_registry
from caixa.settings import Settings

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
        after = Journal(settings.journal_path).counts()
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
    settings = _settings(rules_path)
    ruleset = rules.load(settings.rules)
    out.print(f"{ruleset.source}: {len(ruleset.rules)} rules valid", highlight=False)
    reasons: dict[str, str] = {}
    for rule in ruleset.rules:
        missing = [u.split(":", 1)[0] for u in rule.unavailable]
        reasons.update(u.split(": ", 1) for u in rule.unavailable)
        where = ", ".join(_near(p, ruleset.source.parent) for p in rule.inboxes)
        steps = " -> ".join(s.name for s in rule.steps)
        state = f"waits for: {', '.join(missing)}" if missing else "ready"
        out.print(f"  {rule.name:<12} {where:<24} {steps:<36} {state}", highlight=False)
    for name, reason in sorted(reasons.items()):
        out.print(f"unavailable: {name}: {reason}", highlight=False)
    inactive = sum(not r.active for r in ruleset.rules)
    if strict and inactive:
        raise typer.Exit(1)


@app.command()
def explain(file: Path, rules_path: RulesOpt = None) -> None:
    """Say which rule and steps a file would get, and why the other rules would not take it."""
    ruleset = rules.load(_settings(rules_path).rules)
    if is_temp_name(file.name):
        out.print(f"{file}: caixa ignores hidden and temporary names ({', '.join(TEMP_PATTERNS)})")
        raise typer.Exit(1)
    if not file.is_file():
        err.print(f"caixa: {file}: no such file (explain reads its content to tell its type)")
        raise typer.Exit(ExitCode.not_found)
    verdict = ruleset.decide(file.absolute())
    for reason in verdict.reasons:
        out.print(f"  not {reason}")
    if verdict.rule is None:
        out.print(f"{file}: no rule takes this file; it would stay where it is")
        raise typer.Exit(1)
    rule = verdict.rule
    out.print(f"{file}: rule {rule.name!r} takes it")
    for i, step in enumerate(rule.steps, 1):
        out.print(f"  {i}. {step.name} {json.dumps(step.params) if step.params else ''}")
    out.print(f"  outputs under {ruleset.outputs / rule.output}; source then: {rule.on_success}")
    if not rule.active:
        out.print("  but it waits, because: " + "; ".join(rule.unavailable))


@app.command()
def schema() -> None:
    """Print the JSON Schema of rules.yaml, for editors."""
    print(json.dumps(rules.json_schema(), indent=2))


@app.command()
def status(home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Jobs by state, the running steps, and recent failures with their reasons."""
    journal = Journal.existing(_settings(home=home).home)
    counts = journal.counts()
    running = journal.jobs(State.running)
    failures = journal.jobs(State.failed, limit=10, newest_first=True)
    refused = journal.refusals(10)
    lanes = lanestate.read(journal.path.parent)
    if as_json:
        print(
            json.dumps(
                {
                    "counts": counts,
                    "running": [_job_json(j) for j in running],
                    "recent_failures": [_job_json(j) for j in failures],
                    "refused": [{"path": p, "reason": r} for p, r, _ in refused],
                    "lanes": lanes,
                },
                indent=2,
            )
        )
        return
    out.print("jobs: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"))
    for line in lanestate.describe(lanes):
        out.print(line, markup=False)
    for job in running:
        since = time.time() - job.updated_at
        out.print(
            f"running: {job.id} {job.rule}/{job.running_step} on {job.name!r} ({since:.0f} s)"
        )
    for job in failures:
        error = job.error or {}
        out.print(
            f"failed: {job.id} {job.name!r} at {error.get('step')}: {error.get('message')}"
            f"\n        now at {job.final_path}; retry: caixa retry {job.id}"
        )
    for path, reason, _ in refused:
        out.print(f"refused: {path}: {reason}")


def _job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "state": job.state,
        "rule": job.rule,
        "file": job.name,
        "step": job.running_step,
        "error": job.error,
        "path": job.final_path,
        "updated_at": job.updated_at,
    }


@app.command()
def retry(
    job: Annotated[str | None, typer.Argument(help="job id, or a prefix of one")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="every failed job")] = False,
    home: HomeOpt = None,
) -> None:
    """Queue failed jobs again, from their first step; the daemon takes them at once."""
    settings = _settings(home=home)
    journal = Journal.existing(settings.home)
    if failed:
        jobs = journal.jobs(State.failed)
    elif job:
        jobs = [j for j in journal.find(job) if j.state is State.failed]
        if not jobs:
            raise JobNotFoundError(f"no failed job has an id starting with {job!r}")
    else:
        raise typer.BadParameter("name a job, or give --failed")
    work = WorkArea(settings.work_dir)
    for j in jobs:
        source = Path(j.final_path or "")
        if not j.final_path or not source.exists():
            err.print(f"{j.id}: its file is no longer at {source}; move it back into its inbox")
            continue
        journal.requeue(j.id)  # first: a crash before the move is finished by the daemon
        work.claim(source, j.id, j.name)
        error_file(source).unlink(missing_ok=True)
        out.print(f"{j.id}: {j.name!r} queued again")


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
        _forget(settings.home, outputs, drop, prune)
        return
    if not query:
        raise typer.BadParameter("give a query (or --drop / --prune)")
    results = searching.search(settings.home, query, limit, outputs)
    if as_json:
        hits = [_hit_json(h) for h in results.hits]
        print(
            json.dumps(
                {"queries": results.queries, "note": results.note, "hits": hits},
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    if results.note:
        err.print(f"caixa: {results.note}", markup=False)
    if len(results.queries) > 1:
        err.print("searched: " + " | ".join(results.queries[1:]), markup=False)
    if not results.hits:
        out.print(f"nothing found for {query!r}", markup=False)
    for n, hit in enumerate(results.hits, 1):
        where = _near(hit.folder, Path.cwd()) if hit.folder else "(not published)"
        out.print(
            f"{n}. {hit.document.source_name}  {where}  {hit.artifact} p.{hit.page}"
            f"  score {hit.score:.4f}",
            markup=False,
        )
        out.print("   " + hit.marked("[bold]", "[/bold]", escape))


def _outputs_root(settings: Settings, given: Path | None) -> Path | None:
    """The outputs root from the rules file, when there is one to read."""
    if given is None and not settings.rules.exists():
        return None
    return rules.load(settings.rules).outputs


def _forget(home: Path, outputs: Path | None, drop: str | None, prune: bool) -> None:
    gone = searching.drop(home, drop) if drop is not None else []
    if drop is not None and not gone:
        raise JobNotFoundError(f"no indexed file is named {drop!r} and no indexed job id starts so")
    if prune:
        if outputs is None:
            raise typer.BadParameter(
                "--prune reads the outputs folder from the rules: give --rules"
            )
        gone += searching.prune(home, outputs)
    for doc in gone:
        out.print(f"dropped: {doc.source_name} (job {doc.job_id}, rule {doc.rule})", markup=False)
    if prune and not gone:
        out.print("every indexed document still has its output folder")


def _hit_json(hit: searching.Hit) -> dict[str, Any]:
    return {
        "file": hit.document.source_name,
        "folder": str(hit.folder) if hit.folder else None,
        "text": hit.artifact,
        "page": hit.page,
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
    from caixa import ask as answering
    from caixa.errors import StepError, TransientError
    from caixa.pipelines.chat import open_model

    settings = _settings(rules_path, home)
    outputs = _outputs_root(settings, rules_path)
    try:
        found = answering.answer(
            settings.home,
            question,
            lambda: open_model(model, server, n_ctx=n_ctx, device="cuda"),
            passages=limit,
            max_tokens=max_tokens,
            outputs=outputs,
        )
    except (StepError, TransientError) as exc:
        err.print(f"caixa: {exc}", markup=False)
        raise typer.Exit(1) from exc
    if as_json:
        done = found.generation
        print(
            json.dumps(
                {
                    "question": found.question,
                    "answer": found.text,
                    "sources": [s.to_json() for s in found.sources],
                    "model": found.model,
                    "prompt_tokens": done.prompt_tokens if done else 0,
                    "completion_tokens": done.completion_tokens if done else 0,
                },
                indent=2,
                ensure_ascii=False,
            )
        )
        return
    out.print(answering.markdown(found), end="", markup=False)


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
) -> None:
    """Write a systemd unit with this machine's paths, and say the systemctl commands to run."""
    layout = install.plan(_settings(rules_path), user, home)
    if show:
        out.print(install.render_unit(layout), end="", markup=False)
        out.print("\n# caixa.service.d/settings.conf", markup=False)
        out.print(install.render_dropin(dict(os.environ)), end="", markup=False)
        return
    written = install.install(layout, unit_dir or install.unit_dir(user), dict(os.environ))
    out.print("wrote " + ", ".join(map(str, written)) + "\nnow run:", markup=False)
    for line in install.next_steps(layout):
        out.print(f"  {line}", markup=False)


def main() -> None:
    offline.enforce()
    try:
        app()
    except CaixaError as exc:
        err.print(f"caixa: {exc}", markup=False, highlight=False)
        sys.exit(exc.exit_code)
