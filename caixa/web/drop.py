"""Drop: a file from the page into an inbox. It is written under a dotfile name, which the
watcher ignores (caixa/daemon/intake.py), then renamed to its real name only when whole, so the
daemon never takes half a file. The name is sanitised as outputs' names are, and the file never
replaces one already there."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from caixa.daemon.fsutil import safe_name, with_suffix_number
from caixa.daemon.intake import is_temp_name


class TooLargeError(Exception):
    """The upload is over CAIXA_WEB_MAX_UPLOAD_MB."""


def upload_name(given: str) -> str:
    """A name that stays inside the inbox and that the watcher will take: the last part of
    what the browser sent, sanitised; a temporary-looking name gets `.upload` added."""
    base = given.replace("\\", "/").rsplit("/", 1)[-1]
    name = safe_name(base)
    if name == "_":  # nothing of the name was left
        name = "upload"
    return f"{name}.upload" if is_temp_name(name) else name


async def receive(
    inbox: Path, given_name: str, chunks: AsyncIterator[bytes], max_bytes: int
) -> Path:
    """Write the upload under a temporary name in `inbox`, then give it its name; returns
    where it landed. Nothing is left behind when it fails."""
    name = upload_name(given_name)
    temp = inbox / f".caixa-upload-{secrets.token_hex(8)}.part"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise TooLargeError(f"{name} is larger than {max_bytes // 2**20} MB")
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return _publish(temp, inbox, name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _publish(temp: Path, inbox: Path, name: str) -> Path:
    """Link the whole file under its name (never over another file), then drop the temp."""
    n = 1
    while True:
        target = inbox / with_suffix_number(name, n)
        try:
            os.link(temp, target)
        except FileExistsError:
            n += 1
            continue
        return target
