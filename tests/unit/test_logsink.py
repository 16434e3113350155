"""A log that cannot be written drops its records and counts them; nothing raises into the
thread that logged: a full disk (/dev/full), a pipe whose reader left, a closed stderr,
journald gone. And a daemon thread that dies is logged and stops the watchdog."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import structlog

from caixa import log, logsink
from caixa.daemon.health import ThreadDeaths
from caixa.journald import JournalLogger


def test_a_full_disk_a_closed_pipe_and_a_closed_file_drop_and_count() -> None:
    before = logsink.dropped()
    with open("/dev/full", "w") as full:  # every write: ENOSPC
        assert logsink.write(full, '{"event": "x"}') is False
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w") as broken:  # EPIPE (Python ignores SIGPIPE)
        assert logsink.write(broken, "y") is False
    closed = io.StringIO()
    closed.close()
    assert logsink.write(closed, "z") is False  # ValueError: I/O operation on closed file
    assert logsink.dropped() == before + 3
    out = io.StringIO()
    assert logsink.write(out, "fine") is True and out.getvalue() == "fine\n"


CUT_SHORT = """
import resource, signal, sys
from caixa import logsink
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write(2) says EFBIG instead
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
with open(sys.argv[1], "w") as log:
    resource.setrlimit(resource.RLIMIT_FSIZE, (30, hard))  # the disk fills inside the 2nd
    print(logsink.write(log, '{"event": "first"}'), logsink.write(log, '{"event": "second"}'))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # room again
    print(logsink.write(log, '{"event": "third"}'), logsink.write(log, '{"event": "fourth"}'))
"""


def test_a_record_cut_short_by_a_full_disk_leaves_the_next_on_a_line_of_its_own(
    tmp_path: Path,
) -> None:
    log = tmp_path / "daemon.log"
    ran = subprocess.run(
        [sys.executable, "-c", CUT_SHORT, str(log)], capture_output=True, text=True, check=True
    )
    assert ran.stdout.split() == ["True", "False", "True", "True"]
    lines = log.read_text().split("\n")
    assert lines == ['{"event": "first"}', '{"event": "', '{"event": "third"}',
                     '{"event": "fourth"}', ""]  # fmt: skip


def test_structlog_on_a_full_disk_and_journald_gone_never_raises(tmp_path: Path) -> None:
    before = log.dropped()
    with open("/dev/full", "w") as full:
        structlog.configure(
            processors=[structlog.processors.JSONRenderer()],
            logger_factory=lambda *_: log.LineWriter(full),
            cache_logger_on_first_use=False,
        )
        try:
            structlog.get_logger("t").error("the disk is full", job="j1")
        finally:
            structlog.reset_defaults()
        JournalLogger(tmp_path / "no-journald", full).info(event="claimed", level="info")
    assert log.dropped() == before + 2


def test_a_thread_that_dies_is_recorded_and_the_check_fails() -> None:
    deaths = ThreadDeaths()
    hook = threading.excepthook
    deaths.install()
    try:
        t = threading.Thread(target=lambda: 1 / 0, name="caixa-test")
        t.start()
        t.join()
    finally:
        threading.excepthook = hook
    assert deaths.check() == "caixa-test: ZeroDivisionError: division by zero"
