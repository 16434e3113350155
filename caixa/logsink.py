"""Where log records end up, and what happens when they cannot: a record that cannot be
written (a full disk, a closed pipe, a closed stderr) is dropped and counted, never raised.

A log is never a reason to stop the daemon; `dropped()` lets `caixa status` say what was lost.
"""

from __future__ import annotations

import os
import threading
from typing import TextIO

_lock = threading.Lock()
_dropped = 0
_cut: set[int] = set()  # descriptors whose last record a failed write cut short


def dropped() -> int:
    """Records this process could not write, since it started."""
    return _dropped


def count_drop() -> None:
    global _dropped
    with _lock:
        _dropped += 1


def write(file: TextIO, line: str) -> bool:
    """Write one line with one write(2) straight to the file's descriptor, so no buffer keeps
    half a record after a failed write and processes sharing a stderr do not interleave inside
    a line. A record that a full disk cut short is ended by the next one written, so that each
    whole record still has a line of its own. False, and counted, when it could not be
    written."""
    try:
        fd = file.fileno()
    except (OSError, ValueError, AttributeError):  # no descriptor (a test's capture)
        fd = None
    if fd is None:
        try:
            file.write(line + "\n")
            file.flush()
        except (OSError, ValueError):  # a closed file
            count_drop()
            return False
        return True
    whole = (b"\n" if fd in _cut else b"") + (line + "\n").encode("utf-8", "replace")
    data = whole
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:  # ENOSPC, EPIPE, EIO, a closed descriptor
        if len(data) < len(whole):
            _cut.add(fd)
        count_drop()
        return False
    _cut.discard(fd)
    return True
