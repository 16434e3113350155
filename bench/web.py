"""The page's server time with 100,000 jobs in the journal, and its search against `caixa
search`'s own.

A temporary home: the bilingual set (tests/data/bilingual.json, 30 documents) processed for
real by the daemon (`text, index`), then 100,000 more jobs written straight into the journal
with SQL (done, failed, queued; five rules; three step runs each). A real `caixa web` serves it;
each page is asked for ROUNDS times over loopback (httpx), so the figure is the whole round
trip, an upper bound of the server's time. The reference for each page is the raw SQLite work
it needs, done with the stdlib in this process (the same rows). Search: each query of the set
through the page (models warm in the page's process) against a cold `caixa search` process
(what a person typing it waits for) and against `caixa.app.search` warm in this process.

Target: p95 <= 100 ms for the overview, the jobs list and a job page; search through the page
faster than `caixa search` (>= 0.9x its speed).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from _common import CAIXA, caixa_env, percentile, ratio, save, stop, timed, wait_for

from caixa import app, offline

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "data" / "bilingual.json"
JOBS = 100_000
ROUNDS = 60
TARGET_MS = 100.0
RULES = ("scans", "photos", "notes", "mail", "speak")
PORT = 8499


def fill(home: Path, n: int) -> str:
    """`n` finished jobs with their step runs, written as the journal writes them; returns
    one failed job's id."""
    db = sqlite3.connect(home / "journal.sqlite3")
    rng = random.Random(7)
    now = time.time()
    jobs, runs = [], []
    failed = ""
    for i in range(n):
        job_id = uuid.uuid4().hex[:12]
        state = rng.choices(["done", "failed", "queued", "duplicate"], [90, 6, 2, 2])[0]
        rule = rng.choice(RULES)
        created = now - (n - i) * 30
        error = (
            json.dumps({"step": "ocr", "error": "InputError", "message": "the PDF is empty"})
            if state == "failed"
            else None
        )
        failed = job_id if state == "failed" else failed
        plan = json.dumps({"steps": [{"name": "text", "params": {}}], "output": "{rule}/{stem}"})
        name = f"file-{i:06d}.pdf"
        out = f"{rule}/file-{i:06d}" if state == "done" else None
        jobs.append(
            (job_id, state, rule, "v1", plan, "/in", name, name, 1000 + i, "application/pdf",
             error, out, created, created + 5, created + 5 if state != "queued" else None)
        )  # fmt: skip
        for idx, step in enumerate(("text", "metadata", "index")):
            result = json.dumps({"artifacts": [], "data": {}, "models": [], "device": "cpu",
                                 "notes": [], "seconds": 0.1})  # fmt: skip
            runs.append((job_id, idx, step, created + idx, created + idx + 1, result))
    db.executemany(
        "INSERT INTO jobs (id, state, rule, rule_version, plan, inbox, rel, name, size,"
        " media_type, error, output_dir, created_at, updated_at, finished_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        jobs,
    )
    db.executemany("INSERT INTO step_runs VALUES (?,?,?,?,?,?)", runs)
    db.commit()
    db.close()
    return failed


def raw_sql(home: Path, sql: str, args: tuple[object, ...] = ()) -> None:
    db = sqlite3.connect(home / "journal.sqlite3")
    db.execute(sql, args).fetchall()
    db.close()


def main() -> None:
    offline.enforce()
    root = Path(tempfile.mkdtemp(prefix="caixa-bench-web-"))
    (root / "in").mkdir()
    rules = root / "rules.yaml"
    rules.write_text("rules:\n  - name: notes\n    inbox: in\n    steps: [text, index]\n")
    corpus = json.loads(CORPUS.read_text())
    for doc in corpus:
        (root / "in" / f"{doc['id']}.txt").write_text(doc["text"])
    home = root / "home"
    print(f"indexing {len(corpus)} documents for real ...", flush=True)
    subprocess.run(
        [str(CAIXA), "run", "--once", "--rules", str(rules), "--home", str(home)],
        env=caixa_env(log_level="warning"),
        check=True,
        capture_output=True,
    )
    print(f"writing {JOBS} jobs into the journal ...", flush=True)
    failed = fill(home, JOBS)

    log = root / "web.log"
    web = subprocess.Popen(
        [str(CAIXA), "web", "--port", str(PORT), "--rules", str(rules), "--home", str(home)],
        env=caixa_env(),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{PORT}"
    figures: dict[str, object] = {
        "jobs": JOBS + len(corpus),
        "rounds": ROUNDS,
        "load_average": os.getloadavg()[0],
    }
    print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    try:
        wait_for(lambda: b"caixa web: open" in log.read_bytes(), web, 60, "caixa web")
        http = httpx.Client(base_url=url, timeout=60)
        wait_for(lambda: http.get("/jobs").status_code == 200, web, 60, "the first page")
        pages = {
            "overview": (
                "/",
                "SELECT state, n FROM job_counts WHERE n > 0 UNION ALL SELECT id, updated_at"
                " FROM (SELECT * FROM jobs WHERE state = 'failed' ORDER BY updated_at DESC"
                " LIMIT 5)",
                (),
            ),
            "jobs": (
                "/jobs",
                "SELECT * FROM jobs ORDER BY created_at DESC LIMIT 50",
                (),
            ),
            "jobs, page 1000": (
                "/jobs?page=1000",
                "SELECT * FROM jobs ORDER BY created_at DESC LIMIT 50 OFFSET 49950",
                (),
            ),
            "jobs, failed of a rule, by name": (
                "/jobs?state=failed&rule=scans&name=file-09&sort=name",
                "SELECT * FROM jobs WHERE state = 'failed' AND rule = 'scans'"
                " AND instr(lower(name), 'file-09') > 0 ORDER BY name LIMIT 50",
                (),
            ),
            "a job": (
                f"/jobs/{failed}",
                "SELECT * FROM step_runs WHERE job_id = ? ORDER BY idx",
                (failed,),
            ),
        }
        print(f"{'page':<34} {'p50 ms':>8} {'p95 ms':>8} {'raw SQL p95':>12} {'ratio':>7}")
        for name, (path, sql, args) in pages.items():
            assert http.get(path).status_code == 200, path
            page = timed(lambda p=path: http.get(p), ROUNDS)
            raw = timed(lambda s=sql, a=args: raw_sql(home, s, a), ROUNDS)
            p95, raw95 = percentile(page, 95), percentile(raw, 95)
            figures[name] = {
                "p50_ms": round(percentile(page, 50), 2),
                "p95_ms": round(p95, 2),
                "raw_sql_p95_ms": round(raw95, 2),
                "ratio_to_raw": ratio(p95, raw95),
                "target_met": p95 <= TARGET_MS,
            }
            print(
                f"{name:<34} {percentile(page, 50):8.1f} {p95:8.1f} {raw95:12.2f}"
                f" {ratio(p95, raw95):7}"
            )

        queries = [d[k] for d in corpus[:10] for k in ("q_en", "q_pt")]
        http.get("/search", params={"q": queries[0]})  # the page's models are loaded by now
        page = timed_each(lambda q: http.get("/search", params={"q": q}), queries)
        app.search(home, queries[0], 10)  # warm this process's models too
        warm = timed_each(lambda q: app.search(home, q, 10), queries)
        cold = timed_each(
            lambda q: subprocess.run(
                [str(CAIXA), "search", q, "--home", str(home)],
                env=caixa_env(),
                check=True,
                capture_output=True,
            ),
            queries[:5],
        )
        figures["search"] = {
            "page_p50_ms": round(percentile(page, 50), 1),
            "page_p95_ms": round(percentile(page, 95), 1),
            "app_search_warm_p50_ms": round(percentile(warm, 50), 1),
            "caixa_search_cold_p50_ms": round(percentile(cold, 50), 1),
            "speed_vs_caixa_search": ratio(percentile(cold, 50), percentile(page, 50)),
            "page_vs_warm_library": ratio(percentile(page, 50), percentile(warm, 50)),
        }
        print(
            f"search: page p50 {percentile(page, 50):.0f} ms (p95 {percentile(page, 95):.0f}),"
            f" caixa search (a cold process) p50 {percentile(cold, 50):.0f} ms:"
            f" the page is {ratio(percentile(cold, 50), percentile(page, 50))}x as fast;"
            f" app.search warm in this process p50 {percentile(warm, 50):.0f} ms"
            f" (page/warm {ratio(percentile(page, 50), percentile(warm, 50))})"
        )
    finally:
        stop(web)
    save("web", figures)


def timed_each(fn, items: list[str]) -> list[float]:  # type: ignore[no-untyped-def]
    times = []
    for item in items:
        start = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - start) * 1000)
    return times


if __name__ == "__main__":
    main()
