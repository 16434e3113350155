"""File type from content (libmagic), not from the extension a user or a scanner chose."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import magic

from caixa.nofollow import open_regular

SNIFF_BYTES = 8192


def sniff(path: Path) -> str:
    """The media type of a file, e.g. `application/pdf`, `image/png`, `text/plain`, from its
    first bytes as read from the file itself (a symlink is refused, never followed)."""
    with open_regular(path) as f:
        return of_bytes(f.read(SNIFF_BYTES))


def of_bytes(head: bytes) -> str:
    """The media type that a file's first SNIFF_BYTES say."""
    if not head:
        return "inode/x-empty"
    return magic.from_buffer(head, mime=True)


def matches(media_type: str, patterns: list[str]) -> bool:
    """Whether a media type fits any pattern such as `image/*` or `application/pdf`."""
    return any(fnmatch.fnmatchcase(media_type, p) for p in patterns)


def is_text(media_type: str) -> bool:
    return media_type.startswith("text/") or media_type in {
        "application/json",
        "application/xml",
        "application/x-yaml",
        "application/csv",
        "message/rfc822",  # a saved mail: headers and a body, both text
    }
