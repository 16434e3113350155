"""The work area under --home: a folder per job holding its claimed source and step outputs."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from caixa.daemon.fsutil import claim_move
from caixa.daemon.intake import refusal

# What renameat and an O_NOFOLLOW open say about a symlink where a file or a folder was.
SWAPPED = frozenset({errno.ELOOP, errno.ENOTDIR, errno.EINVAL})


class NotRegularError(OSError):
    """What a claim took is not the regular file the watcher saw: a writer swapped it for a
    symlink (or a fifo, a folder...) in between. It is refused and nothing of it is read."""


class WorkArea:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    def source(self, job_id: str, name: str) -> Path:
        return self.root / job_id / "source" / name

    def step_dir(self, job_id: str, idx: int) -> Path:
        return self.root / job_id / str(idx)

    def fresh_step_dir(self, job_id: str, idx: int) -> Path:
        """An empty folder for a step; what a crashed earlier run left there is removed."""
        folder = self.step_dir(job_id, idx)
        try:
            folder.mkdir()  # its job folder exists: the source was claimed into it
        except FileExistsError:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
        return folder

    def claim(
        self, path: Path, job_id: str, name: str, inbox: Path | None = None, sync: bool = True
    ) -> Path:
        """Take the file out of its inbox with one atomic rename: from now on it is ours.
        Then look at what was taken, before anything reads it: a writer may have swapped the
        file for a symlink after the watcher looked. Anything but a regular file is refused
        (NotRegularError): a symlink, fifo or socket is removed (only its name: what a
        symlink points to is never opened), a folder is put back. No folder between `inbox`
        and the file is followed.

        The job's row is durable before the rename, and the rename is durable (both folders
        synced) before any later phase is recorded: after a power cut the file is never back
        in its inbox while its job has gone on, which would take it a second time. (With
        `sync` false the caller syncs both folders before it records a later phase.)"""
        target = self.source(job_id, name)
        try:
            st = claim_move(path, target, inbox, sync)
        except OSError as exc:
            if exc.errno in SWAPPED:
                raise NotRegularError(
                    exc.errno,
                    "it or a folder on its way was replaced by a symlink or something other"
                    " than a regular file after caixa looked at it; refused, nothing read",
                ) from exc
            raise
        if not stat.S_ISREG(st.st_mode):
            why = refusal(st.st_mode, target)
            if stat.S_ISDIR(st.st_mode):
                os.rename(target, path)
            else:
                os.unlink(target)
            raise NotRegularError(
                errno.EINVAL,
                f"it was replaced after caixa looked at it, by {why}; refused and removed,"
                " nothing it points to was read",
            )
        return target

    def remove(self, job_id: str) -> None:
        """The job's folder and all in it. Usually it holds only empty folders (its source
        and outputs have moved out): those go with a few rmdirs, not a walk of the tree."""
        folder = self.job_dir(job_id)
        try:
            for inner in folder.iterdir():
                inner.rmdir()
            folder.rmdir()
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)

    def job_ids(self) -> list[str]:
        return [p.name for p in self.root.iterdir() if p.is_dir()]
