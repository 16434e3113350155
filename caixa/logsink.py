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
    a line. False, and counted, when it could not be written."""
    data = (line + "\n").encode("utf-8", "replace")
    try:
        fd = file.fileno()
    except (OSError, ValueError, AttributeError):  # no descriptor (a test's capture)
        fd = None
    try:
        if fd is None:
            file.write(line + "\n")
            file.flush()
            return True
        while data:
            data = data[os.write(fd, data) :]
    except (OSError, ValueError):  # ENOSPC, EPIPE, EIO, a closed file
        count_drop()
        return False
    return True
