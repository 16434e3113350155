"""What happens to a path found in an inbox: ignored (a temp name), refused (not a regular
file), left where it is (no rule takes it, or its rule waits for a step), or claimed by a rule.
One filter, shared by the watcher, the daemon and `caixa explain`."""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from caixa.config.rules import RuleSet
from caixa.daemon.journal import Claim

TEMP_PATTERNS = (
    "*.part", "*.partial", "*.crdownload", "*.download", "*.tmp", "*.temp", "*.swp", "~$*", ".*",
)  # fmt: skip


def is_temp_name(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name.lower(), p) for p in TEMP_PATTERNS)


def refusal(mode: int, path: Path) -> str | None:
    """Why a path that is not a regular file is refused, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return f"a symlink (to {os.readlink(path)}); caixa takes only regular files: copy it in"
    if stat.S_ISFIFO(mode):
        return "a fifo; caixa takes only regular files"
    if stat.S_ISSOCK(mode):
        return "a socket; caixa takes only regular files"
    return "a device or special file; caixa takes only regular files"


def misnamed(path: Path) -> str | None:
    """Why a name caixa cannot record is refused: bytes that are not UTF-8 (a name from an old
    Windows share or a zip made on one) would not survive the journal, the manifest or a log."""
    try:
        path.name.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path.name).decode("utf-8", "backslashreplace")
        return (
            f"its name ({shown}) is not UTF-8 text; rename it"
            " (for a whole folder: convmv -f cp1252 -t utf8 --notest -r FOLDER)"
        )
    return None


# journal.is_kept: whether a file left in its inbox after success (on_success: keep) is this one
KeptCheck = Callable[[Path, int, int], bool]


class Stays(StrEnum):
    """Why a ready file stays in its inbox."""

    unmatched = "no rule takes this file; it stays"
    waiting = "file waits: its rule needs a step that is unavailable"
    kept = "kept: processed before, and left in its inbox by on_success: keep"


@dataclass(frozen=True)
class Decision:
    claim: Claim | None  # what the file is claimed as, or None when it stays
    stays: Stays | None = None
    details: tuple[str, ...] = ()  # why no rule took it, or which steps are unavailable
    refused: str | None = None  # why it is refused, when it is not a regular file
    rule: str | None = None  # the rule that would take it, when it waits


def decide(rules: RuleSet, path: Path, is_kept: KeptCheck) -> Decision:
    """The claim a ready file gets, or why it stays (OSError when it cannot be read)."""
    st = path.lstat()
    refused = refusal(st.st_mode, path) or misnamed(path)
    if refused is not None:
        return Decision(None, refused=refused)
    verdict = rules.decide(path)
    rule = verdict.rule
    if rule is None or verdict.inbox is None or verdict.rel is None:
        return Decision(None, Stays.unmatched, tuple(verdict.reasons))
    if not rule.active:
        return Decision(None, Stays.waiting, tuple(rule.unavailable), rule=rule.name)
    if is_kept(path, st.st_size, st.st_mtime_ns):
        return Decision(None, Stays.kept)
    plan = {
        "steps": [s.model_dump() for s in rule.steps],
        "output": rule.output,
        "on_success": rule.on_success,
    }
    return Decision(Claim(rule.name, rule.version, plan, verdict.inbox, verdict.rel))
