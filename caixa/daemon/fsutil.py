"""Durable file moves and writes, and names that cannot escape their folder."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import unicodedata
from collections.abc import Callable
from pathlib import Path

NAME_MAX = 255  # bytes, on every filesystem caixa expects
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(folder: Path) -> None:
    """`mkdir -p` whose new folders survive a power cut: each new entry's parent is synced."""
    missing = []
    for path in (folder, *folder.parents):
        if path.is_dir():
            break
        missing.append(path)
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another thread
            path.mkdir()
        fsync_dir(path.parent)


def move(src: Path, dst: Path) -> None:
    """Rename, or across filesystems copy to a temporary name beside `dst`, sync, rename and
    only then remove `src`: the file is whole in at least one place at every instant."""
    make_dirs(dst.parent)
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(temp_name(dst.name))
        try:
            shutil.copy2(src, tmp)
            fsync_file(tmp)
            os.rename(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)  # a copy cut short by a full disk leaves nothing
        fsync_dir(dst.parent)
        os.unlink(src)


def durable_move(src: Path, dst: Path) -> None:
    """A move that survives a power cut once it returns: both folders are synced, so after a
    cut the file is found where it went and not also (or only) where it was."""
    move(src, dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)


def atomic_write(dst: Path, fill: Callable[[Path], None], sync: bool = True) -> None:
    """`fill` writes a temporary file beside `dst`; it is synced, renamed into place and its
    folder synced (unless it is only a view that is rewritten anyway)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(temp_name(dst.name))
    try:
        fill(tmp)
        if sync:
            fsync_file(tmp)
        os.replace(tmp, dst)
        if sync:
            fsync_dir(dst.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(dst: Path, data: bytes, sync: bool = True) -> None:
    atomic_write(dst, lambda tmp: tmp.write_bytes(data), sync)


def temp_name(name: str) -> str:
    """A dot-name the watcher ignores, short enough even when `name` is 255 bytes."""
    return f".caixa-tmp-{os.getpid()}-{fit(name, 160)}"


def fit(name: str, max_bytes: int) -> str:
    """Cut a name to at most `max_bytes` of UTF-8 without splitting a character."""
    data = name.encode("utf-8")
    if len(data) <= max_bytes:
        return name
    return data[:max_bytes].decode("utf-8", errors="ignore")


def safe_name(name: str, max_bytes: int = 200) -> str:
    """One path component that stays in its folder: no separators, control characters,
    leading dots or `..`; the extension is kept when the name must be shortened."""
    name = unicodedata.normalize("NFC", _UNSAFE.sub("_", name)).strip().lstrip(".")
    if not name:
        return "_"
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext.encode()) > 16:
        return fit(name, max_bytes) or "_"
    return f"{fit(stem, max_bytes - len(ext.encode()) - 1)}.{ext}"


def with_suffix_number(name: str, n: int) -> str:
    """`report.pdf` -> `report-2.pdf`, for the n-th file of the same name."""
    if n < 2:
        return name
    stem, dot, ext = name.rpartition(".")
    return f"{stem}-{n}.{ext}" if dot and stem else f"{name}-{n}"


def free_name(folder: Path, name: str) -> Path:
    """`folder/name`, or the first `name-N` there that no file takes."""
    n = 1
    while True:
        candidate = folder / with_suffix_number(name, n)
        if not os.path.lexists(candidate):
            return candidate
        n += 1


def is_inside(path: Path, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))
