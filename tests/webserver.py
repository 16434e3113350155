"""A real `caixa web` subprocess on a free loopback port, for the page's tests."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import CAIXA, World


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class WebServer:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_web(
    world: World, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> WebServer:
    """`caixa web` on the world's rules and home; returns once it answers on its port."""
    port = free_port()
    log = world.root / f"web-{port}.log"
    proc = subprocess.Popen(
        [
            str(CAIXA),
            "web",
            "--port",
            str(port),
            "--rules",
            str(world.rules),
            "--home",
            str(world.home),
            *args,
        ],
        env={**world.env, **(env or {})},
        cwd=world.root,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"caixa web exited: {log.read_text()[-3000:]}"
        if re.search(r"caixa web: open http://", log.read_text(errors="replace")):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                pass
            else:
                return WebServer(proc, f"http://127.0.0.1:{port}", log)
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"caixa web did not answer: {log.read_text()[-3000:]}")
