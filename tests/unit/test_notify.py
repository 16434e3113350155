"""sd_notify as systemd reads it, and the supervisor that pets the watchdog only while every
part of the daemon answers."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from caixa.daemon.health import Supervisor
from caixa.daemon.notify import Notifier, watchdog_interval


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[socket.socket]:
    """A datagram socket where systemd's would be."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2)
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    got = []
    while True:
        try:
            got.append(sock.recv(4096).decode())
        except BlockingIOError:
            return got


def test_notifications_reach_a_socket_by_path_or_in_the_abstract_namespace(
    manager: socket.socket,
) -> None:
    assert Notifier(manager.getsockname()).send("READY=1", "STATUS=scanning")
    assert manager.recv(4096) == b"READY=1\nSTATUS=scanning"

    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind(f"\0caixa-test-{os.getpid()}")
    abstract.settimeout(2)
    assert Notifier(f"@caixa-test-{os.getpid()}").send("WATCHDOG=1")
    assert abstract.recv(4096) == b"WATCHDOG=1"
    abstract.close()


def test_without_a_manager_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    assert not Notifier(None).send("READY=1")
    assert not Notifier(str(tmp_path / "gone")).send("READY=1")  # a manager that went away


def test_the_watchdog_interval_is_for_the_process_systemd_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # inherited by a child: not for it
    assert watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    assert watchdog_interval() is None


def test_the_watchdog_is_petted_only_while_every_part_answers(
    manager: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    answer: dict[str, str | None] = {"watcher": None}
    supervisor = Supervisor(
        Notifier(manager.getsockname()),
        {"watcher": lambda: answer["watcher"], "scheduler": lambda: None},
        lambda: "3 queued, 1 running, 10 done, 0 failed",
    )
    assert supervisor.ping_every == 1.0
    supervisor.mark_ready()
    assert supervisor.tick(100.0) == 101.0
    assert received(manager) == [
        "READY=1\nSTATUS=3 queued, 1 running, 10 done, 0 failed",
        "WATCHDOG=1",
        "STATUS=3 queued, 1 running, 10 done, 0 failed",
    ]

    answer["watcher"] = "no event has come through for 31 s"
    supervisor.tick(101.0)
    assert received(manager) == [  # no WATCHDOG=1, and the reason at once
        "STATUS=3 queued, 1 running, 10 done, 0 failed;"
        " not answering: watcher: no event has come through for 31 s"
    ]
    supervisor.tick(102.0)
    assert received(manager) == []

    answer["watcher"] = None
    supervisor.tick(103.0)
    assert received(manager) == ["WATCHDOG=1", "STATUS=3 queued, 1 running, 10 done, 0 failed"]


def test_with_no_service_manager_the_next_tick_is_still_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No status line is built when nobody listens, yet ticks stay spaced out: a tick due at
    once, every time, would spin the daemon's loop."""
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    counted = []
    supervisor = Supervisor(
        Notifier(None), {"watcher": lambda: None}, lambda: counted.append(1) or ""
    )
    supervisor.mark_ready()
    for now in (100.0, 100.5, 101.0):
        assert supervisor.tick(now) > now
    assert counted == []  # the status line counts every job: never built for no one
