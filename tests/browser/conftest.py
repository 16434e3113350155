"""One real daemon and one real `caixa web` per module, and Debian's chromium driven by
Playwright (never `playwright install`: it would download a browser)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import World
from tests.webserver import WebServer, start_web

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@dataclass
class Site:
    world: World
    web: WebServer
    shots: Path  # where the screenshots go: CAIXA_SCREENSHOTS, or the module's temp folder


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


def start_site(root: Path, rules: str, before: dict[str, bytes] | None = None) -> Site:
    """Rules, files already in the inboxes, the daemon and the page."""
    world = World(root)
    world.env.update(OFFLINE)
    world.write_rules(rules)
    for rel, data in (before or {}).items():
        path = world.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    world.start()
    world.wait_for(lambda: world.home.joinpath("journal.sqlite3").exists(), 120, "the journal")
    web = start_web(world)
    shots = Path(os.environ.get("CAIXA_SCREENSHOTS") or root / "screenshots")
    shutil.rmtree(shots, ignore_errors=True)
    shots.mkdir(parents=True)
    return Site(world, web, shots)
