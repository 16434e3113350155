"""The page in a real browser, against a real daemon and a real `caixa web`: files dropped
through the page go from the inbox to done without a reload, their outputs open as a person
reads them, search crosses Portuguese and English, an answer streams in and its citation
opens, a failed job is retried and done; every page in both languages is screenshot and
checked with axe-core."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Site, start_site
from tests.documents import text_pdf
from tests.photos import ASSETS

AXE = Path(__file__).parent / "vendor" / "axe-4.14.1.min.js"
WAIT = 180_000  # ms: generous, for a busy 2-core machine loading real models

RENT = "The monthly rent of the flat in Lisbon is 900 euros, paid on the first day of the month."
BOILER = "A reparação da caldeira custa 120 euros e é feita pelo senhor Silva na terça-feira."
INVOICE = "Invoice 2291 from Northwind Plumbing. Replacing the kitchen tap: 85 euros, due in May."

RULES = """
rules:
  - name: scans
    inbox: in/scans
    match: {glob: ["*.pdf"]}
    steps:
      - ocr: {languages: por+eng}
      - index
  - name: photos
    inbox: in/photos
    match: {type: [image/jpeg, image/png]}
    steps: [detect, classify, index]
  - name: speak
    inbox: in/speak
    steps:
      - text
      - tts: {compress: ogg}
  - name: fragile
    inbox: in/fragile
    steps:
      - flaky: {needs: FIXED}
  - name: notes
    inbox: in/notes
    steps: [text, index]
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("page")
    rules = RULES.replace("FIXED", str(root / "fixed"))
    before = {
        "in/notes/rent.txt": RENT.encode(),
        "in/notes/caldeira.txt": BOILER.encode(),
        "in/speak/hello.txt": b"Hello from caixa. This is a short test of the voice.",
        "in/fragile/letter.txt": b"A letter that needs a file that is not there yet.",
    }
    found = start_site(root, rules, before)
    world = found.world
    world.wait_for(lambda: world.finished() >= 4, 240, "the first four files")
    yield found
    found.web.stop()
    world.stop_all()


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Any]:
    context = browser.new_context(base_url=site.web.url, locale="en-US")
    tab = context.new_page()
    tab.set_default_timeout(WAIT)
    yield tab
    context.close()


def option_for(page: Any, rule: str) -> str:
    return page.locator("#inbox option", has_text=re.compile(rf"^{rule} ")).get_attribute("value")


def job_link(page: Any, name: str) -> str:
    return page.locator("#recent tr", has_text=name).locator("a").first.get_attribute("href")


def test_dropped_files_go_to_done_without_a_reload(page: Any, site: Site, tmp_path: Path) -> None:
    pdf = text_pdf([INVOICE], tmp_path / "invoice.pdf")
    photo = tmp_path / "bus.jpg"
    shutil.copy(ASSETS / "bus.jpg", photo)
    page.goto("/drop")
    page.evaluate("window.caixaMarker = 'same page'")
    page.select_option("#inbox", option_for(page, "scans"))
    page.set_input_files("#files", str(pdf))
    page.select_option("#inbox", option_for(page, "photos"))
    page.set_input_files("#files", str(photo))
    page.locator("#dropped li.done").nth(1).wait_for()
    assert not page.locator("#dropped li.problem").count()
    for name in ("invoice.pdf", "bus.jpg"):
        row = page.locator("#recent tr", has_text=name)
        row.wait_for()  # it appeared by itself: the daemon took it
        row.locator(".state-done").wait_for()
    assert page.evaluate("window.caixaMarker") == "same page"  # never reloaded
    assert not list((site.world.root / "in" / "scans").iterdir())


def test_each_output_opens_as_a_person_reads_it(page: Any, site: Site) -> None:
    page.goto("/drop")
    invoice, bus = job_link(page, "invoice.pdf"), job_link(page, "bus.jpg")

    page.goto(invoice)
    text = page.locator("article[data-kind=text] pre").first
    assert "Northwind" in text.inner_text()
    for frame in page.locator("article[data-kind=pdf] iframe").all():
        served = page.request.get(frame.get_attribute("src"))
        assert served.status == 200 and served.headers["content-type"] == "application/pdf"
        assert served.body().startswith(b"%PDF")

    page.goto(bus)
    image = page.locator("article[data-kind=image] img").first
    image.wait_for()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
    )
    shown = page.locator("article[data-kind=json] pre").first.inner_text()
    assert json.loads(shown) and "\n  " in shown  # pretty-printed

    page.goto("/jobs?rule=speak")
    page.locator("table.jobs a", has_text="hello.txt").click()
    audio = page.locator("audio").first
    duration = page.evaluate(
        """a => new Promise(done => {
            if (a.readyState >= 1) done(a.duration);
            a.addEventListener('loadedmetadata', () => done(a.duration));
            a.addEventListener('error', () => done(-1));
            a.load();
        })""",
        audio.element_handle(),
    )
    assert duration > 1.0


@pytest.mark.parametrize(
    ("query", "found"),
    [("aluguel mensal do apartamento", "rent.txt"), ("boiler repair", "caldeira.txt")],
)
def test_search_crosses_portuguese_and_english(
    page: Any, site: Site, query: str, found: str
) -> None:
    page.goto("/search")
    page.fill("#q", query)
    page.press("#q", "Enter")
    first = page.locator("li.hit").first
    first.wait_for()
    assert found in first.locator("h2").inner_text()
    assert first.locator("mark").count() or first.locator(".snippet").inner_text()
    output = first.locator(".where a")
    served = page.request.get(output.get_attribute("href"))
    assert served.status == 200


def test_ask_streams_the_answer_and_its_citation_opens(page: Any, site: Site) -> None:
    page.goto("/ask")
    page.fill("#question", "How much is the monthly rent of the flat?")
    page.press("#question", "Enter")
    page.locator("[data-testid=answer]").wait_for()
    assert int(page.get_attribute("#answer", "data-pieces")) > 1  # it came in pieces
    assert page.locator("#answer").get_attribute("aria-busy") == "false"
    page.screenshot(path=str(site.shots / "en-ask-answered.png"), full_page=True)
    source = page.locator("ol.sources a", has_text="rent.txt").first
    source.click()
    page.wait_for_url(re.compile(r"/out/notes/rent/rent\.txt$"))
    assert "900 euros" in page.locator("body").inner_text()


def test_a_failed_job_is_retried_from_the_page(page: Any, site: Site) -> None:
    page.goto("/failed")
    article = page.locator("article.failure", has_text="letter.txt")
    assert "could not do its work" in article.inner_text()
    assert "is missing" in article.inner_text()
    job = article.locator("h2 a").get_attribute("href")
    page.screenshot(path=str(site.shots / "en-failed-one.png"), full_page=True)
    page.goto(job)
    page.screenshot(path=str(site.shots / "en-job-failed.png"), full_page=True)
    page.goto("/failed")
    (site.world.root / "fixed").write_text("now it is here\n")
    article.get_by_role("button", name=re.compile("Retry")).click()
    page.wait_for_url(re.compile(r"/failed\?retried=1$"))
    assert "1 job queued again" in page.locator("[role=status]").inner_text()
    deadline = time.monotonic() + WAIT / 1000
    while time.monotonic() < deadline:
        page.goto(job)
        if page.locator("[data-testid=job-state] .state-done").count():
            break
        page.wait_for_timeout(250)
    else:
        raise AssertionError("the retried job did not finish")


PAGES = {
    "overview": "/",
    "jobs": "/jobs",
    "failed": "/failed",
    "search": "/search?q=caldeira",
    "ask": "/ask",
    "drop": "/drop",
    "rules": "/rules",
    "system": "/system",
}


@pytest.mark.parametrize("language", ["en", "pt"])
def test_every_page_in_both_languages_meets_wcag_basics(
    browser: Any, site: Site, language: str
) -> None:
    # bypass_csp only so that axe-core can be injected: the page itself runs under its CSP
    context = browser.new_context(
        base_url=site.web.url, locale="pt-BR" if language == "pt" else "en-US", bypass_csp=True
    )
    page = context.new_page()
    page.set_default_timeout(WAIT)
    try:
        page.goto("/drop")
        pages = {**PAGES, "job": job_link(page, "invoice.pdf"), "photo": job_link(page, "bus.jpg")}
        problems = {}
        for name, path in pages.items():
            page.goto(path)
            assert page.get_attribute("html", "lang").startswith(language)
            nav = page.locator("nav").inner_text()
            assert ("Resumo" in nav) == (language == "pt"), nav
            page.screenshot(path=str(site.shots / f"{language}-{name}.png"), full_page=True)
            page.add_script_tag(path=str(AXE))
            found = page.evaluate(
                """async () => (await axe.run(document, {resultTypes: ['violations']}))
                    .violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                           nodes: v.nodes.map(n => n.target.join(' '))}))"""
            )
            bad = [v for v in found if v["impact"] in ("serious", "critical")]
            if bad:
                problems[name] = bad
        assert not problems, json.dumps(problems, indent=1)
    finally:
        context.close()


def test_the_language_switch_sets_the_page_language(page: Any, site: Site) -> None:
    page.goto("/jobs")
    page.get_by_role("link", name="Português").click()
    page.wait_for_url(re.compile(r"/jobs$"))
    assert page.get_attribute("html", "lang") == "pt-BR"
    assert page.locator("h1").inner_text() == "Tarefas"
    page.get_by_role("link", name="English").click()
    assert page.locator("h1").inner_text() == "Jobs"
