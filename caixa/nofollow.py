"""Reading a file caixa was given, never what a symlink in its place points to.

The claim refuses anything but a regular file (caixa/daemon/workarea.py); the readers check
again as they open, with O_NOFOLLOW and a look at what was opened, so no path that a writer
could swap leads caixa to read another file, or to hang on a fifo."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from caixa.errors import InputError


def open_regular(path: Path) -> BinaryIO:
    """`path` open for reading when it is a regular file itself. A symlink (even to a
    regular file), a fifo, a socket, a device or a folder is refused with InputError: what a
    symlink points to is never opened, and a fifo is never waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(
                f"{path.name} is a symlink; caixa reads only regular files, never what a"
                " symlink points to"
            ) from exc
        raise
    opened = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        opened.close()
        raise InputError(f"{path.name} is not a regular file (a fifo, device or folder)")
    return opened


def read_regular(path: Path) -> bytes:
    """The bytes of a regular file (open_regular)."""
    with open_regular(path) as f:
        return f.read()
