"""Files the page serves: only under the outputs root (and a job's own source under processed/
or failed/), found component by component without following a symlink, and sent with a type
that no browser runs as a page of ours."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

TEXT_LIMIT = 200_000  # characters of a text output shown in the page; the rest is a download
ENCODED = re.compile(r"%(2f|5c|00|2e)", re.IGNORECASE)  # '/', '\', NUL, '.' written encoded

# What a browser may show inline, by extension; anything else downloads as bytes.
INLINE = {
    ".pdf": "application/pdf",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".wav": "audio/wav",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/plain; charset=utf-8",  # Markdown is shown as its text, never as HTML
    ".json": "application/json",
    ".csv": "text/plain; charset=utf-8",
}
KINDS = {
    "application/pdf": "pdf",
    "audio/wav": "audio",
    "audio/ogg": "audio",
    "audio/mpeg": "audio",
    "application/json": "json",
    "text/plain; charset=utf-8": "text",
}


class RefusedError(Exception):
    """The path asks for something outside what the page serves."""


def check_raw(raw_path: bytes) -> None:
    """Refuse separators, dots and NUL written percent-encoded: a name never needs them."""
    if ENCODED.search(raw_path.decode("latin-1")):
        raise RefusedError("encoded separators, dots and NUL are refused")


def inside(root: Path, rel: str) -> Path:
    """`root/rel`, a regular file reached without a symlink, `..`, or an absolute part;
    FileNotFoundError when it is not there."""
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        raise RefusedError("absolute paths, backslashes and NUL are refused")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise RefusedError("'..' and empty parts are refused")
    path = Path(os.path.realpath(root))
    for part in parts:
        path = path / part
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            raise RefusedError("symlinks are not followed")
    if not stat.S_ISREG(mode):
        raise RefusedError("not a regular file")
    return path


def media_type(name: str) -> str | None:
    """The type a file is served as inline, or None: a download."""
    return INLINE.get(Path(name).suffix.lower())


@dataclass(frozen=True)
class Shown:
    """An output as the job page shows it."""

    name: str
    href: str  # where the page serves it
    kind: str  # pdf, image, audio, json, text, or file (a download)
    text: str | None = None  # the text of a text or JSON output, as a person reads it
    cut: bool = False  # the text was longer than what is shown


def shown(path: Path, href: str) -> Shown:
    kind_type = media_type(path.name)
    kind = "file" if kind_type is None else KINDS.get(kind_type, "image")
    if kind not in ("text", "json"):
        return Shown(path.name, href, kind)
    try:
        raw = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return Shown(path.name, href, "file")
    if kind == "json" and len(raw) <= TEXT_LIMIT:
        with contextlib.suppress(ValueError):
            raw = json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
    return Shown(path.name, href, kind, raw[:TEXT_LIMIT], len(raw) > TEXT_LIMIT)
