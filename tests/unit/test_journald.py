"""Records in journald's native format, read back as journald reads them."""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

from caixa.journald import JournalLogger, field_name
from tests.integration.test_service import journal_fields


def test_a_record_carries_its_fields_and_multiline_values_whole(tmp_path: Path) -> None:
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind(str(tmp_path / "socket"))
    journal.settimeout(2)
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1\nOSError: disco cheio'
    JournalLogger(tmp_path / "socket").error(
        event="job failed",
        level="error",
        job="3f2a",
        rule="docs",
        step="ocr",
        error="não foi possível ler a página 2",
        timestamp="2026-01-01T00:00:00Z",
        exception=trace,
    )
    fields = journal_fields(journal.recv(65536))
    journal.close()
    assert fields == {
        "MESSAGE": "job failed job=3f2a rule=docs step=ocr error=não foi possível ler a página 2"
        f"\n{trace}",
        "PRIORITY": "3",
        "SYSLOG_IDENTIFIER": "caixa",
        "JOB": "3f2a",
        "RULE": "docs",
        "STEP": "ocr",
        "ERROR": "não foi possível ler a página 2",
    }


def test_without_journald_a_record_still_reaches_stderr(tmp_path: Path) -> None:
    fallback = io.StringIO()
    JournalLogger(tmp_path / "no-journal", fallback).info(event="claimed", level="info", job="j1")
    assert json.loads(fallback.getvalue()) == {"event": "claimed", "level": "info", "job": "j1"}


def test_keys_become_journal_field_names() -> None:
    assert field_name("media_type") == "MEDIA_TYPE"
    assert field_name("_source") == "SOURCE"  # '_' fields are journald's own, trusted ones
    assert field_name("2nd-try") == "ND_TRY"
