"""The page's defences, through a real `caixa web` and a real HTTP client: CSRF, traversal,
the bind without a password, the login's rate limit, uploads' names, the headers."""

from __future__ import annotations

import http.client
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from caixa.daemon.journal import Claim, Journal
from caixa.home import Home
from tests.conftest import CAIXA, World
from tests.webserver import WebServer, free_port, start_web

RULES = """
rules:
  - name: notes
    inbox: in
    steps: [text]
"""


def new_world(root: Path) -> World:
    world = World(root)
    world.write_rules(RULES)
    world.inbox()
    Journal(Home(world.home).journal).close()  # a home caixa has used: the page reads it
    return world


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, WebServer]]:
    world = new_world(tmp_path_factory.mktemp("web-security"))
    (world.outputs / "notes" / "a").mkdir(parents=True)
    (world.outputs / "notes" / "a" / "a.txt").write_text("inside\n")
    (world.outputs / "notes" / "a" / "page.html").write_text("<script>alert(1)</script>")
    secret = world.root / "secret.txt"
    secret.write_text("outside\n")
    (world.outputs / "notes" / "a" / "link.txt").symlink_to(secret)
    (world.outputs / "notes" / "up").symlink_to(world.root)
    server = start_web(world)
    yield world, server
    server.stop()


def client(server: WebServer) -> tuple[httpx.Client, str]:
    """A browser-like session: its cookie, and the CSRF token its pages carry."""
    http = httpx.Client(base_url=server.url, follow_redirects=False, timeout=30)
    page = http.get("/drop")
    token = re.search(r'data-csrf="([^"]+)"', page.text)
    assert token, page.text[:500]
    return http, token.group(1)


def test_state_changing_requests_need_the_csrf_token(site: tuple[World, WebServer]) -> None:
    world, server = site
    http, token = client(server)
    assert http.post("/failed/retry", data={"rule": "notes"}).status_code == 403
    assert http.post("/failed/retry", data={"rule": "notes", "csrf": "forged"}).status_code == 403
    assert http.post("/drop?inbox=0&name=a.txt", content=b"hello").status_code == 403
    stranger = httpx.Client(base_url=server.url, timeout=30)  # another session's token
    assert (
        stranger.post(
            "/drop?inbox=0&name=a.txt", content=b"x", headers={"x-csrf-token": token}
        ).status_code
        == 403
    )
    assert list(world.inbox().iterdir()) == []
    done = http.post("/failed/retry", data={"rule": "notes", "csrf": token})
    assert done.status_code == 303  # nothing had failed: zero queued, but accepted


def raw_get(server: WebServer, path: str) -> int:
    """A request line exactly as written: no client-side clean-up of `..` or escapes."""
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


@pytest.mark.parametrize(
    "path",
    [
        "/out/../secret.txt",
        "/out/notes/../../secret.txt",
        "/out/%2e%2e/secret.txt",
        "/out/notes%2f..%2f..%2fsecret.txt",
        "/out/notes/a/..%2f..%2f..%2fsecret.txt",
        "/out//etc/passwd",
        "/out/%2Fetc%2Fpasswd",
        "/out/notes/a/link.txt",  # a symlink to a file outside
        "/out/notes/up/secret.txt",  # through a symlinked folder
        "/out/notes/a/a.txt%00.png",
        "/out/notes/a/..\\..\\..\\secret.txt",
    ],
)
def test_traversal_is_refused(site: tuple[World, WebServer], path: str) -> None:
    _, server = site
    assert raw_get(server, path) in (400, 404)


def test_outputs_are_served_and_never_run_as_pages(site: tuple[World, WebServer]) -> None:
    _, server = site
    http = httpx.Client(base_url=server.url, timeout=30)
    text = http.get("/out/notes/a/a.txt")
    assert text.status_code == 200 and text.text == "inside\n"
    assert text.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in text.headers["content-security-policy"]
    html = http.get("/out/notes/a/page.html")
    assert html.headers["content-type"] == "application/octet-stream"
    assert html.headers["content-disposition"].startswith("attachment")


def test_pages_carry_the_security_headers(site: tuple[World, WebServer]) -> None:
    _, server = site
    page = httpx.get(server.url + "/", timeout=30)
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in re.sub(r"<script src=[^>]+></script>", "", page.text)


def test_an_upload_lands_inside_its_inbox_under_a_safe_name(
    site: tuple[World, WebServer],
) -> None:
    world, server = site
    http, token = client(server)
    for name in ("../../x", "..", "/etc/cron.d/evil", ".hidden", "a\\..\\b.txt", "notes.part"):
        sent = http.post(
            "/drop",
            params={"inbox": "0", "name": name},
            content=b"payload",
            headers={"x-csrf-token": token},
        )
        assert sent.status_code == 201, sent.text
    landed = sorted(p.name for p in world.inbox().iterdir())
    assert landed == ["b.txt", "evil", "hidden", "notes.part.upload", "upload", "x"], landed
    assert not (world.root / "x").exists() and not (world.root.parent / "x").exists()
    assert all((world.inbox() / n).read_bytes() == b"payload" for n in landed)


def test_an_upload_over_the_limit_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    world = new_world(tmp_path)
    server = start_web(world, env={"CAIXA_WEB_MAX_UPLOAD_MB": "1"})
    try:
        http, token = client(server)
        sent = http.post(
            "/drop",
            params={"inbox": "0", "name": "big.bin"},
            content=b"\0" * (2 * 2**20),
            headers={"x-csrf-token": token},
        )
        assert sent.status_code == 413
        assert list(world.inbox().iterdir()) == []  # not even the temporary file
    finally:
        server.stop()


def test_other_addresses_need_a_password(tmp_path: Path) -> None:
    world = new_world(tmp_path)
    refused = subprocess.run(
        [str(CAIXA), "web", "--host", "0.0.0.0", "--port", str(free_port()),
         "--rules", str(world.rules), "--home", str(world.home)],
        env=world.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "CAIXA_WEB_PASSWORD" in refused.stderr


def test_with_a_password_pages_need_a_login_and_guesses_are_limited(tmp_path: Path) -> None:
    world = new_world(tmp_path)
    server = start_web(world, env={"CAIXA_WEB_PASSWORD": "correct horse"})
    try:
        http = httpx.Client(base_url=server.url, timeout=30)
        assert http.get("/jobs").status_code == 303
        login = http.get("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
        assert http.post("/login", data={"password": "correct horse"}).status_code == 403
        statuses = [
            http.post("/login", data={"password": f"guess {n}", "csrf": token}).status_code
            for n in range(6)
        ]
        assert statuses[:5] == [401] * 5 and statuses[5] == 429
        # even the right password waits now
        assert (
            http.post("/login", data={"password": "correct horse", "csrf": token}).status_code
            == 429
        )
    finally:
        server.stop()


def test_the_right_password_opens_the_pages(tmp_path: Path) -> None:
    world = new_world(tmp_path)
    server = start_web(world, env={"CAIXA_WEB_PASSWORD": "correct horse"})
    try:
        http = httpx.Client(base_url=server.url, timeout=30)
        token = re.search(r'name="csrf" value="([^"]+)"', http.get("/login").text).group(1)
        assert (
            http.post("/login", data={"password": "correct horse", "csrf": token}).status_code
            == 303
        )
        assert http.get("/jobs").status_code == 200
    finally:
        server.stop()


def test_a_hostile_name_is_shown_escaped(tmp_path: Path) -> None:
    """A name with a right-to-left override and a terminal escape shows its escapes on the
    page: it cannot pass `invoice\\u202etxt.exe` off as `invoiceexe.txt`."""
    world = new_world(tmp_path)
    journal = Journal(Home(world.home).journal)
    plan = {"steps": [{"name": "text", "params": {}}], "output": "{rule}/{stem}"}
    journal.begin_claims([Claim("notes", "v1", plan, world.inbox(), "invoice\u202etxt.exe\x1b[2J")])
    journal.close()
    server = start_web(world)
    try:
        page = httpx.get(server.url + "/jobs", timeout=30).text
    finally:
        server.stop()
    assert "invoice\\u202etxt.exe\\x1b[2J" in page
    assert "\u202e" not in page and "\x1b" not in page
