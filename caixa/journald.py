"""Log records straight to journald, each with its own fields (JOB=, RULE=, STEP=, PRIORITY=),
through journald's native protocol: one datagram of fields per record to its socket.

Our own few lines rather than systemd-python: the protocol is a documented wire format
(systemd.io/JOURNAL_NATIVE_PROTOCOL), and the binding needs libsystemd's headers and a compiler.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import sys
from pathlib import Path
from typing import Any, TextIO

from caixa import logsink

PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}
_NOT_IN_NAME = re.compile(r"[^A-Z0-9_]")


def stderr_is_journal() -> bool:
    """systemd sets JOURNAL_STREAM to the device and inode of the stream it connected to
    stderr; when they match, journald reads our stderr and the native protocol is better."""
    dev, _, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


def field_name(key: str) -> str:
    """A journal field name: upper case letters, digits and '_', not starting with '_' (those
    are the journal's own trusted fields) or a digit."""
    name = _NOT_IN_NAME.sub("_", key.upper()).lstrip("_0123456789")[:64]
    return name or "FIELD"


def encode(fields: dict[str, str]) -> bytes:
    """Fields in the native format: NAME=value lines, or, for a value holding a newline,
    the name, a newline, the value's length (64-bit little endian) and the value."""
    out = bytearray()
    for name, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


def fields_of(event: dict[str, Any]) -> dict[str, str]:
    """A structlog event as journal fields: MESSAGE reads like a log line (event, then key=value
    pairs); each key is also a field of its own, so `journalctl JOB=...` finds a job's lines."""
    event = dict(event)
    level = str(event.pop("level", "info"))
    message = str(event.pop("event", ""))
    trace = event.pop("exception", None)
    event.pop("timestamp", None)  # the journal stamps every record itself
    pairs = " ".join(f"{k}={_text(v)}" for k, v in event.items())
    fields = {
        "MESSAGE": " ".join(filter(None, [message, pairs])) + (f"\n{trace}" if trace else ""),
        "PRIORITY": str(PRIORITY.get(level, 6)),
        "SYSLOG_IDENTIFIER": "caixa",
    }
    for key, value in event.items():
        fields.setdefault(field_name(key), _text(value))
    return fields


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


class JournalLogger:
    """A structlog logger that sends each record to journald; a record it cannot send (no
    journald, a full socket buffer, or one too large for a datagram) goes to `fallback` as a
    JSON line instead, and one that cannot go there either is dropped and counted (logsink).

    The socket never blocks: a journald that stalls must not stall the thread that logs."""

    def __init__(
        self,
        path: Path,
        fallback: TextIO | None = None,
    ) -> None:
        self.path = str(path)
        self.fallback = fallback or sys.stderr
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def msg(self, **event: Any) -> None:
        try:
            self._sock.sendto(encode(fields_of(event)), self.path)
            return
        except OSError:
            pass
        logsink.write(self.fallback, json.dumps(event, ensure_ascii=False, default=str))

    debug = info = warning = warn = error = critical = exception = failure = fatal = log = msg
