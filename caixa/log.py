"""structlog set-up: records with their own fields to journald under systemd, JSON lines
elsewhere off a terminal (files), readable lines on one.

A log is never a reason to stop: a sink that cannot take a record (a full disk, a closed pipe,
a closed stderr, journald gone) drops it and counts it (`dropped()`, shown by `caixa status`);
no write error reaches the thread that logged.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TextIO

import structlog

from caixa import journald, logsink
from caixa.display import shown


def dropped() -> int:
    """Records this process could not write, since it started."""
    return logsink.dropped()


class LineWriter:
    """A structlog logger that writes each record as one line (logsink.write): a record that
    cannot be written is dropped and counted."""

    def __init__(self, file: TextIO) -> None:
        self.file = file

    def msg(self, message: str) -> None:
        logsink.write(self.file, message)

    debug = info = warning = warn = error = critical = exception = failure = fatal = log = msg


def configure(
    fmt: Literal["auto", "json", "console", "journal"] = "auto",
    level: str = "info",
    journal_socket: Path = Path("/run/systemd/journal/socket"),
) -> None:
    to_journal = fmt == "journal" or (fmt == "auto" and journald.stderr_is_journal())
    use_json = to_journal or fmt == "json" or (fmt == "auto" and not _isatty(sys.stderr))
    renderer: structlog.typing.Processor
    factory: Callable[..., Any]
    if to_journal:  # the journal logger makes the record's fields itself
        renderer, factory = _as_is, _shared(journald.JournalLogger(journal_socket))
    elif use_json:  # JSON escapes control characters itself
        renderer, factory = structlog.processors.JSONRenderer(), _shared(LineWriter(sys.stderr))
    else:
        console = structlog.dev.ConsoleRenderer(colors=_isatty(sys.stderr))
        renderer, factory = _shown_then(console), _shared(LineWriter(sys.stderr))
    # watchdog's inotify emitter logs an "error" on every clean shutdown; events are only hints
    # (scans are the truth), so its chatter is kept out of the user's log.
    logging.getLogger("watchdog").setLevel(logging.CRITICAL)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if use_json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def _shown_then(render: structlog.typing.Processor) -> structlog.typing.Processor:
    """A readable line whose names cannot drive the terminal: every string in the record
    (a file name, a path, an error naming them) is escaped first (caixa.display.shown)."""

    def rendered(logger: Any, method: str, event: dict[str, Any]) -> Any:
        safe = {shown(k): v if k == "exc_info" else _safe(v) for k, v in event.items()}
        return render(logger, method, safe)

    return rendered


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, list | tuple):
        return [_safe(v) for v in value]
    if isinstance(value, dict):
        return {shown(k): _safe(v) for k, v in value.items()}
    return value


def _isatty(file: TextIO) -> bool:
    try:
        return file.isatty()
    except (OSError, ValueError, AttributeError):  # a closed stderr is no terminal
        return False


def _as_is(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    return event


def _shared(logger: Any) -> Callable[..., Any]:
    return lambda *_: logger


def get(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)
