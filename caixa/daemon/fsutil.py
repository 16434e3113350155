"""Durable file moves and writes, and names that cannot escape their folder."""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import stat
import unicodedata
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

NAME_MAX = 255  # bytes, on every filesystem caixa expects
SYNC_THREADS = 16  # folders synced at once by fsync_dirs
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dirs(folders: Collection[Path]) -> None:
    """Sync many folders at once: their syncs overlap, so a journaling filesystem commits
    them together rather than one flush of the disk after another."""
    if len(folders) <= 1:
        for folder in folders:
            fsync_dir(folder)
        return
    with ThreadPoolExecutor(min(SYNC_THREADS, len(folders))) as pool:
        list(pool.map(fsync_dir, folders))


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(folder: Path) -> bool:
    """`mkdir -p` whose new folders survive a power cut: each new entry's parent is synced.
    True when this call made `folder` itself (so nothing is in it yet)."""
    missing = []
    for path in (folder, *folder.parents):
        if path.is_dir():
            break
        missing.append(path)
    made = False
    for path in reversed(missing):
        try:
            path.mkdir()
            made = path == folder
        except FileExistsError:  # made meanwhile by another thread, unless it is a file
            if not path.is_dir():
                raise
            made = False
        fsync_dir(path.parent)
    return made


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


def claim_move(src: Path, dst: Path, root: Path | None = None, sync: bool = True) -> os.stat_result:
    """Move a file out of an inbox without ever following a symlink to what it points to:
    no folder between `root` (its inbox) and the file is followed, and across filesystems
    the copy reads the file itself (O_NOFOLLOW), not a symlink swapped into its place. The
    entry that arrived at `dst` is returned as lstat sees it: whatever the writer swapped in,
    the caller looks before anything reads it. Unless `sync` is false (the caller syncs both
    folders itself, for many moves at once), the move is durable once this returns."""
    folder = _folder_of(src, root)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(src.name, dst, src_dir_fd=folder)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_regular(src.name, folder, dst)
            os.unlink(src.name, dir_fd=folder)
        if sync:  # after a power cut the file is where it went, not (also) back in its inbox
            fsync_dir(dst.parent)
            os.fsync(folder)
        return os.lstat(dst)
    finally:
        os.close(folder)


def _folder_of(path: Path, root: Path | None) -> int:
    """A descriptor of `path`'s folder, reached from `root` one folder at a time, refusing
    (ELOOP, ENOTDIR) any that is a symlink: a recursive inbox's subfolder swapped for a
    symlink to elsewhere cannot make caixa take a file from there."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    if root is None or not path.is_relative_to(root):
        return os.open(path.parent, flags)
    fd = os.open(root, flags)
    try:
        for part in path.parent.relative_to(root).parts:
            inner = os.open(part, flags | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


def _copy_regular(name: str, folder: int, dst: Path) -> None:
    """Copy a regular file (and its times) to `dst` through a temporary name, synced; a
    symlink, fifo or device in its place is refused without being read or opened through."""
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    with os.fdopen(src, "rb") as reader:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"{name} is not a regular file")
        tmp = dst.with_name(temp_name(dst.name))
        try:
            with open(tmp, "wb") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
                writer.flush()
                os.fsync(writer.fileno())
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
            os.rename(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
    fsync_dir(dst.parent)


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


def remove_stale_temps(dst: Path) -> None:
    """Remove what `atomic_write(dst)` left beside `dst` in a process killed mid-write; only
    for a file that one process writes at a time (such as one daemon's, under its home lock)."""
    for stale in dst.parent.glob(f".caixa-tmp-*-{glob.escape(fit(dst.name, 160))}"):
        stale.unlink(missing_ok=True)


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
    """Whether `path` lies in `root` on disk, symlinks followed. The usual case is checked
    with a look at each folder below `root` that exists (a publish's two or three), not a walk
    of every folder from `/` twice: a path written under `root` with no `..` can leave it only
    through a symlink on the way, and one found is followed to where it leads."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = ("..",)
    if ".." not in parts and not _may_lead_out(root, parts):
        return True
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def _may_lead_out(root: Path, parts: tuple[str, ...]) -> bool:
    """Whether a folder on the way from `root` through `parts` is a symlink, or cannot be
    looked at (then realpath decides)."""
    here = root
    for part in parts:
        here = here / part
        try:
            if stat.S_ISLNK(os.lstat(here).st_mode):
                return True
        except FileNotFoundError:  # nothing below it exists yet, so no symlink either
            return False
        except OSError:
            return True
    return False
