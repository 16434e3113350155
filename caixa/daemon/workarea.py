"""The work area under --home: a folder per job holding its claimed source and step outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

from caixa.daemon.fsutil import durable_move


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
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()  # its job folder exists: the source was claimed into it
        return folder

    def claim(self, path: Path, job_id: str, name: str) -> Path:
        """Take the file out of its inbox with one atomic rename: from now on it is ours.

        The job's row is durable before the rename, and the rename is durable (both folders
        synced) before any later phase is recorded: after a power cut the file is never back
        in its inbox while its job has gone on, which would take it a second time."""
        target = self.source(job_id, name)
        durable_move(path, target)
        return target

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def job_ids(self) -> list[str]:
        return [p.name for p in self.root.iterdir() if p.is_dir()]
