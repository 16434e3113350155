"""Typed errors, each mapped to the exit code a user or systemd sees (as OCRmyPDF does)."""

from __future__ import annotations

import errno
from enum import IntEnum


class ExitCode(IntEnum):
    ok = 0
    usage = 2  # typer's own code for a bad command line
    rules_invalid = 3
    home_locked = 4
    not_found = 5
    home_unusable = 6
    doctor_problems = 7  # `caixa doctor` found something that stops a rule from running


class CaixaError(Exception):
    """Base of every error caixa reports to a user by itself."""

    exit_code: ExitCode = ExitCode.usage


class RulesError(CaixaError):
    """rules.yaml cannot be used; the message names file, line and key."""

    exit_code = ExitCode.rules_invalid


class HomeLockedError(CaixaError):
    """Another daemon already runs on this home: two would claim the same files."""

    exit_code = ExitCode.home_locked


class HomeUnusableError(CaixaError):
    """The home (journal, work area) cannot be created, opened or written."""

    exit_code = ExitCode.home_unusable


class JobNotFoundError(CaixaError):
    exit_code = ExitCode.not_found


class StepError(Exception):
    """A step cannot do its work on this input; retrying will not help."""


class InputError(StepError):
    """The input itself is bad: empty, unreadable, not the type a step needs, too large."""


class TransientError(Exception):
    """A step failed for a reason that may pass (busy device, full disk, timeout)."""


# OS errors that say "try again later" rather than "this input is bad".
TRANSIENT_ERRNOS = frozenset(
    {errno.EBUSY, errno.ENOSPC, errno.EAGAIN, errno.ETIMEDOUT, errno.EINTR, errno.EDQUOT}
)


def is_transient(exc: BaseException) -> bool:
    """Whether a failure deserves a retry with backoff instead of failing the job."""
    if isinstance(exc, TransientError | TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


class NoRoomError(Exception):
    """A write failed for lack of room (a full disk, a read-only remount, an I/O error): the
    job waits until there is room again, and the attempt does not count."""


# What a write that found no room raises: the errno, or SQLite's (and apsw's) words for it.
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO})
_NO_ROOM_WORDS = ("disk is full", "readonly database", "disk i/o error", "read-only file system")


def is_no_room(exc: BaseException) -> bool:
    """Whether a failure is the filesystem's rather than the job's: waiting for room cures it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, NoRoomError):
            return True
        if isinstance(current, OSError) and current.errno in NO_ROOM_ERRNOS:
            return True
        module = type(current).__module__.split(".")[0]
        if module in ("sqlite3", "apsw") and any(
            words in str(current).lower() for words in _NO_ROOM_WORDS
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError (CUDA and ROCm alike), or Python's own MemoryError."""
    return (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or "out of memory" in str(exc).lower()
    )
